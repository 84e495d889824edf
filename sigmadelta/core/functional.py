"""Stateless operators of a Sigma-Delta network, over a leading time axis.

Every function here is pure: state comes in as an argument and the new state goes out as a return value, so
each can be tested alone. The stateful modules in :mod:`sigmadelta.core.modules` wrap them.

Time is always dimension 0: a clip is ``[T, B, ...]``; a state is one frame, ``[B, ...]``.
Rounding is half-to-even (``torch.round``) everywhere in the package.

>>> import torch
>>> x = torch.tensor([[0.2], [0.9], [1.4]])           # (T=3, B=1)
>>> d, last = temporal_difference(x, torch.zeros(1))
>>> torch.allclose(integrate(d, torch.zeros(1))[0], x)
True
"""

from __future__ import annotations

import torch

__all__ = [
    "round_ste",
    "temporal_difference",
    "integrate",
    "running_sum",
    "herding_quantize",
    "sigma_delta_encode",
    "SCHEMES",
    "round_levels",
    "hysteresis_levels",
    "threshold_levels",
    "encode_levels",
]


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, with the rounding error treated as constant noise in the backward pass.

    .. math:: s = x + \\mathrm{stopgrad}(\\mathrm{round}(x) - x)

    Used only when a gradient is wanted: in floating point ``x + (round(x) - x)`` is not always bit-equal to
    ``round(x)``, so inference paths call ``torch.round`` directly.
    """
    return x + (torch.round(x) - x).detach()


def temporal_difference(x: torch.Tensor, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal difference Δ over the leading time axis.

    .. math:: y_t = x_t - x_{t-1}, \\qquad x_0 := \\text{last}

    Args:
        x: ``[T, ...]`` frames.
        last: ``[...]`` the frame before ``x[0]`` (zeros at the start of a stream).

    Returns:
        ``(y, x[-1])``: the differences ``[T, ...]`` and the new state.
    """
    if _records_grad(x, last):
        return torch.diff(x, dim=0, prepend=last.unsqueeze(0)), x[-1]
    y = torch.empty_like(x)  # the same subtractions without autograd, in one pass and no concatenated copy
    torch.sub(x[1:], x[:-1], out=y[1:])
    torch.sub(x[0], last, out=y[0])
    return y, x[-1]


def integrate(deltas: torch.Tensor, total: torch.Tensor, offset: torch.Tensor | None = None, *,
              overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Integration Σ over the leading time axis: the inverse of :func:`temporal_difference`.

    .. math:: y_t = y_{t-1} + x_t, \\qquad y_0 := \\text{total}

    When ``total`` has the dtype of ``deltas``, the sums are those of a frame-by-frame loop (bit for bit in
    float64, see :func:`running_sum`), so clip and streaming results agree. When ``total`` is wider (a float64
    running sum of float32 increments), the ``T`` increments are summed in their own dtype and added to the
    running sum: outputs carry the rounding error of the narrow dtype, but the wide state does not drift over
    long streams.

    Args:
        deltas: ``[T, ...]`` increments.
        total: ``[...]`` the running sum before ``deltas[0]``.
        offset: added to every output but not to the state (a layer's bias); broadcasts against ``[...]``.
        overwrite: the result may be written into ``deltas`` (a temporary the caller no longer needs; ignored
            when autograd records), which spares two allocations of its size.

    Returns:
        ``(y + offset, new_total)``: the running sums ``[T, ...]`` in the dtype of ``deltas``, and the new
        state ``y[-1]`` in the dtype of ``total``.
    """
    in_place = overwrite and not _records_grad(deltas, total, offset)
    out = deltas if in_place else None
    if total.dtype == deltas.dtype:
        y = running_sum(deltas, total, out=out)
        new_total = y[-1].clone() if in_place else y[-1]  # y changes below when the offset is added in place
        start = None
    else:
        y = running_sum(deltas, out=out)  # (T, ...): Σ of this call's increments, in their dtype
        new_total = total + y[-1].to(total.dtype)
        start = total.to(deltas.dtype)  # one frame, cheap
    if offset is not None:
        start = offset if start is None else start + offset
    if start is not None:
        y = y.add_(start) if in_place else y + start
    return y, new_total


def running_sum(x: torch.Tensor, start: torch.Tensor | None = None, *,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Cumulative sum over dim 0: ``y_0 = start + x_0``, ``y_t = y_{t-1} + x_t`` (``start`` omitted: ``y_0 = x_0``).

    Large frames (4096 values or more) without autograd go through one add per step, in the order of a
    frame-by-frame loop, bit for bit: ``torch.cumsum`` is slow over the leading axis of large frames (as slow as a
    convolution on EfficientNet's feature maps). Small frames use ``torch.cumsum``, which on the CPU adds in the
    same order in float64 and, for float32, accumulates in float64 and rounds each output once. ``out`` (which
    may be ``x`` itself) receives the result.
    """
    if x.numel() // max(len(x), 1) < 4096 or _records_grad(x, start):
        y = x.cumsum(0) if start is None else torch.cat([start.unsqueeze(0), x]).cumsum(0)[1:]
        return y if out is None else out.copy_(y)
    y = torch.empty_like(x) if out is None else out
    if start is not None:
        torch.add(start, x[0], out=y[0])
    elif y is not x:
        y[0].copy_(x[0])
    for t in range(1, len(x)):
        torch.add(y[t - 1], x[t], out=y[t])
    return y


def _records_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def herding_quantize(x: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Herding (sigma-delta) quantizer Q, the paper's definition, as a loop over time.

    .. math:: \\phi \\leftarrow \\phi + x_t;\\quad s_t = \\mathrm{round}(\\phi);\\quad \\phi \\leftarrow \\phi - s_t

    The sums telescope: :math:`\\sum_{\\tau\\le t} s_\\tau = \\mathrm{round}(\\sum_{\\tau\\le t} x_\\tau)` and
    :math:`|\\phi| \\le 1/2`. This is the reference definition; networks use :func:`sigma_delta_encode`, which
    computes the same integers from the integrated signal without accumulating floating-point error in φ.

    Args:
        x: ``[T, ...]`` real increments (already scaled).
        phi: ``[...]`` residual state.

    Returns:
        ``(s, phi)``: the integers ``[T, ...]`` (as floats) and the new residual.
    """
    out = []
    for x_t in x:
        phi = phi + x_t
        s_t = torch.round(phi)
        phi = phi - s_t
        out.append(s_t)
    return torch.stack(out), phi


def sigma_delta_encode(
    scaled: torch.Tensor, last_rounded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigma-delta encoding of an integrated, already scaled signal: ``s = Q(Δ(k x)) = Δ(round(k x))``.

    With :math:`r_t = \\mathrm{round}(k x_t)` and :math:`s_t = r_t - r_{t-1}`, the herding residual is
    :math:`\\phi_t = k x_t - r_t`, so this emits exactly the integers of :func:`herding_quantize` applied to
    :math:`\\Delta(k x)`, and :math:`\\sum_\\tau s_\\tau = r_t` holds exactly, with no drift.

    Args:
        scaled: ``[T, ...]`` the values ``k·x``.
        last_rounded: ``[...]`` ``round(k x)`` of the frame before (zeros at the start of a stream).

    Returns:
        ``(s, r, r[-1])``: the emitted integers, the rounded values ``round(k x)`` and the new state.
    """
    r = torch.round(scaled)
    s, last = temporal_difference(r, last_rounded)
    return s, r, last


# ---------------------------------------------------------------------------------------------------------
# delta schemes: one frame's level update, L_t = f(v_t, L_{t-1}; p), with v = k·x the scaled input

SIGMA_DELTA_SCHEME, HYSTERESIS, THRESHOLD = "sigma-delta", "hysteresis", "threshold"
SCHEMES = (SIGMA_DELTA_SCHEME, HYSTERESIS, THRESHOLD)


def round_levels(scaled: torch.Tensor, last: torch.Tensor, param: float = 0.0, *,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's scheme: :math:`L_t = \\mathrm{round}(v_t)` (``last`` and ``param`` unused).

    Its messages :math:`s_t = L_t - L_{t-1}` are those of the herding quantizer :math:`Q(\\Delta v)`
    (:func:`sigma_delta_encode`). ``out`` (may be ``scaled``) receives the result.
    """
    return torch.round(scaled, out=out) if out is not None else torch.round(scaled)


def hysteresis_levels(scaled: torch.Tensor, last: torch.Tensor, h: float, *,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """Sigma-Delta with hysteresis: a unit's integer level moves only when ``v`` is ``0.5 + h`` or more from it.

    .. math:: L_t = \\begin{cases} \\mathrm{round}(v_t) & |v_t - L_{t-1}| \\ge \\tfrac12 + h \\\\
              L_{t-1} & \\text{otherwise} \\end{cases}

    Hence :math:`|v_t - L_t| \\le \\tfrac12 + h` always (the error of ``x`` is at most ``(0.5 + h)/k``), and
    ``h = 0`` gives :math:`L_t = \\mathrm{round}(v_t)` bit for bit (where ``|v − L| < 1/2`` the rounding is ``L``
    itself; the subtraction is exact there by Sterbenz' lemma). Idempotent: a unit whose input did not change keeps
    its level, so skipping unchanged inputs (the sparse engine) changes nothing. Messages ``L_t − L_{t−1}`` are
    integers, as in the paper's scheme.
    """
    move = torch.sub(scaled, last).abs_() >= 0.5 + h
    rounded = torch.round(scaled)
    return torch.where(move, rounded, last, out=out) if out is not None else torch.where(move, rounded, last)


def threshold_levels(scaled: torch.Tensor, last: torch.Tensor, theta: float, *,
                     out: torch.Tensor | None = None) -> torch.Tensor:
    """The peers' thresholded deltas (EvNets, DeltaCNN): a full-precision reference per unit.

    .. math:: L_t = \\begin{cases} v_t & |v_t - L_{t-1}| > \\theta \\\\ L_{t-1} & \\text{otherwise} \\end{cases}

    The message :math:`L_t - L_{t-1}` is ``v − ref`` where the unit moved more than θ and 0 elsewhere; the
    error ``|v_t − L_t| ≤ θ``. Networks run this scheme with ``k = 1`` (``v = x``, θ in the input's units).
    Idempotent, like :func:`hysteresis_levels`. Messages are real numbers: each costs a multiply-add.
    """
    move = torch.sub(scaled, last).abs_() > theta
    return torch.where(move, scaled, last, out=out) if out is not None else torch.where(move, scaled, last)


LEVEL_FUNCTIONS = {SIGMA_DELTA_SCHEME: round_levels, HYSTERESIS: hysteresis_levels, THRESHOLD: threshold_levels}


def encode_levels(scheme: str, scaled: torch.Tensor, last: torch.Tensor, param: float = 0.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The levels ``L [T, ...]`` of a clip ``scaled [T, ...]`` under ``scheme``, from ``last`` (the level before
    ``scaled[0]``): frame by frame, so a clip gives what streaming gives, bit for bit. Returns ``(L, L[-1])``."""
    if scheme == SIGMA_DELTA_SCHEME:
        levels = torch.round(scaled)
        return levels, levels[-1]
    if scheme not in LEVEL_FUNCTIONS:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {SCHEMES}")
    level = LEVEL_FUNCTIONS[scheme]
    levels = torch.empty_like(scaled)
    for t in range(len(scaled)):
        last = level(scaled[t], last.to(scaled.dtype), param, out=levels[t])
    return levels, levels[-1]
