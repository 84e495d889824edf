"""Stateful modules that a converted network is made of.

A converted network keeps every op of the original model and adds two kinds of module around each linear
operation ``u = W x + b`` (fully connected or convolution):

- :class:`Quantizer` on the input edge: it holds the layer's learnable scale ``k = exp(κ)`` and turns the
  real-valued input ``x`` into the *message* the layer receives;
- :class:`SigmaDeltaLinear` in place of the op: it applies ``W`` to the message and, where messages are
  increments, integrates the result before adding the bias once.

Per mode (the four networks of the paper's Figure 1):

=====================  ==============================  =================================
mode                   message m_t (Quantizer)         output u_t (SigmaDeltaLinear)
=====================  ==============================  =================================
original               x_t                             W m_t + b
rounding               round(k x_t) / k                W m_t + b
temporal-difference    Δ(x)_t                          Σ(W m)_t + b
sigma-delta            Q(Δ(k x))_t / k                 Σ(W m)_t + b
=====================  ==============================  =================================

Everything between linear operations (nonlinearities, pooling, residual adds, ...) runs on real,
integrated values, unchanged. That is the paper's layout (Σ before each run of nonlinear ops, Δ → Q after)
with the ops that commute with Δ moved to the integrated side, where they compute the same values.

Modules see a batch of ``T·B`` frames: ``T`` time steps (set in :attr:`steps` by the network before each
call) of ``B`` independent streams, time-major. Streaming is ``T = 1``. State updates are staged and only
committed by the network once the whole forward pass succeeded, so a failing call leaves state untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .functional import (SCHEMES, SIGMA_DELTA_SCHEME, THRESHOLD, encode_levels, integrate, round_ste,
                         temporal_difference)

__all__ = ["MODES", "Observation", "Quantizer", "SigmaDeltaLinear", "StatefulMixin"]

ORIGINAL, TEMPORAL_DIFFERENCE, ROUNDING, SIGMA_DELTA = "original", "temporal-difference", "rounding", "sigma-delta"
MODES = (ORIGINAL, TEMPORAL_DIFFERENCE, ROUNDING, SIGMA_DELTA)
STATEFUL_MODES = (TEMPORAL_DIFFERENCE, SIGMA_DELTA)


class StatefulMixin:
    """Mode, time-step count and staged state shared by the two module kinds.

    State lives in one non-persistent buffer per module (``None`` until the first frame: its shape comes from
    the input). ``_pending`` holds the state computed by the current call until :meth:`commit`.
    """

    mode: str = ORIGINAL
    steps: int = 1  # T of the current call; the batch is T·B frames, time-major
    delta_dtype: torch.dtype = torch.float64  # dtype of the increments (SigmaDeltaNet.set_delta_dtype)

    def _init_state(self, name: str) -> None:
        self._state_name = name
        self.register_buffer(name, None, persistent=False)
        self._pending: torch.Tensor | None = None

    def _state_or_zeros(self, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The committed state, or zeros shaped like one frame of ``like`` (``[T, B, ...]``) at stream start."""
        state = getattr(self, self._state_name)
        if state is None:
            return torch.zeros_like(like[0], dtype=dtype)
        return state

    def _stage(self, state: torch.Tensor) -> None:
        # a copy: the new state is the last frame of a tensor that flows on through the graph, and an in-place op
        # downstream (nn.ReLU(inplace=True) on a bias-free layer's output, say) must not change it
        self._pending = state.detach().clone()

    def commit(self) -> None:
        if self._pending is not None:
            setattr(self, self._state_name, self._pending)
            self._pending = None

    def discard(self) -> None:
        self._pending = None

    def reset(self) -> None:
        setattr(self, self._state_name, None)
        self._pending = None


@dataclass(frozen=True)
class Observation:
    """What one quantizer saw and sent in one call, each ``[T·B, ...]``, detached (``None`` where not sent).

    Attributes:
        x: the real input (in the original and temporal-difference modes the original network's activation).
        r: the rounding network's integers ``round(k x)`` (rounding and sigma-delta modes, whatever the scheme).
        s: the sigma-delta mode's messages ``L_t − L_{t−1}`` before ``/k`` (integers; real for thresholds).
    """

    x: torch.Tensor
    r: torch.Tensor | None = None
    s: torch.Tensor | None = None


class Quantizer(StatefulMixin, nn.Module):
    """The input side of one linear layer: scale, round, difference and quantize.

    One learnable log-scale κ per layer (``k = exp(κ)``, initialised to ``k = 1``), or one per channel.
    Mode by mode (see the module docstring), with ``r_t = round(k x_t)``:

    .. math::

        m_t = x_t, \\quad r_t / k, \\quad x_t - x_{t-1}, \\quad (r_t - r_{t-1}) / k

    The sigma-delta integers ``s_t = r_t − r_{t−1}`` are those of the herding quantizer
    ``Q(Δ(k x))`` (:func:`sigmadelta.core.functional.sigma_delta_encode`), so ``Σ_τ s_τ = round(k x_t)`` exactly.
    ``r`` is computed in the model's dtype, as in the rounding network, so both networks round the same
    values; the differences are taken in :attr:`delta_dtype` (float64 unless set to the model's dtype). The
    integers ``r`` and ``s`` are exact in float32 while ``|r| < 2**24``.

    :attr:`scheme` chooses how the sigma-delta mode forms its levels ``L_t`` (``r_t`` above), from
    :mod:`sigmadelta.core.functional`: ``"sigma-delta"`` (the paper's, ``L_t = round(k x_t)``), ``"hysteresis"``
    (:func:`~sigmadelta.core.functional.hysteresis_levels`, :attr:`scheme_param` = h) or ``"threshold"``
    (:func:`~sigmadelta.core.functional.threshold_levels`, :attr:`scheme_param` = θ, with ``k = 1``); the message is
    ``(L_t − L_{t−1}) / k`` in every scheme. The other modes ignore the scheme.

    After each call :attr:`observation` (an :class:`Observation`) holds what it saw and sent: what the op counter,
    scale learning and the evaluation read (through :meth:`sigmadelta.SigmaDeltaNet.observations`).

    Args:
        name: the layer name (the first linear layer this quantizer feeds).
        scale_shape: shape of κ; ``()`` for the paper's one scale per layer, ``(C, 1, 1)`` for per-channel.
    """

    noise: str = "round"  # "uniform": kx + U(−½, ½) instead of rounding (scale learning; SigmaDeltaNet.configured)

    def __init__(self, name: str, scale_shape: tuple[int, ...] = ()):
        super().__init__()
        self.name = name
        self.log_scale = nn.Parameter(torch.zeros(scale_shape))
        self._init_state("last")  # x_{t-1} (temporal-difference) or r_{t-1} (sigma-delta), [B, ...]
        self.observation: Observation | None = None  # of the last call
        self.scheme = SIGMA_DELTA_SCHEME
        self.scheme_param = 0.0  # h (hysteresis) or θ (threshold)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.exp()

    @property
    def message_scale(self) -> torch.Tensor:
        """The ``k`` the sigma-delta mode uses: the scale, or 1 for the threshold scheme (full-precision levels)."""
        return torch.ones_like(self.log_scale) if self.scheme == THRESHOLD else self.scale

    def set_scheme(self, scheme: str, param: float = 0.0) -> None:
        """Choose the level recurrence of the sigma-delta mode (see the class docstring)."""
        if scheme not in SCHEMES:
            raise ValueError(f"quantizer {self.name!r}: unknown scheme {scheme!r}; choose from {SCHEMES}")
        param = float(param)
        if not (param >= 0 and param < float("inf")):
            raise ValueError(f"quantizer {self.name!r}: the {scheme} parameter must be finite and >= 0, got {param}")
        self.scheme, self.scheme_param = scheme, param
        self.reset()

    def _levels(self, scaled: torch.Tensor) -> torch.Tensor:
        """The levels ``L [T, B, ...]`` of the clip ``scaled = k·x`` under :attr:`scheme`, from the state."""
        if self.scheme == SIGMA_DELTA_SCHEME:
            return self._round(scaled)
        last = self._state_or_zeros(scaled, scaled.dtype).to(scaled.dtype)
        levels, _ = encode_levels(self.scheme, scaled.detach(), last, self.scheme_param)
        if torch.is_grad_enabled() and scaled.requires_grad:
            return scaled + (levels - scaled).detach()  # straight through, as round_ste
        return levels

    def _round(self, scaled: torch.Tensor) -> torch.Tensor:
        """Round ``scaled``, a temporary ``k·x`` that nothing else holds (or add uniform noise, see :attr:`noise`)."""
        if self.noise == "uniform":
            return scaled + (torch.rand_like(scaled) - 0.5)
        if not torch.is_grad_enabled():
            return scaled.round_()  # in place: spares a large allocation per call
        # Straight-through rounding only when a gradient is wanted: it is not bit-exact (see round_ste).
        return round_ste(scaled) if self.log_scale.requires_grad else torch.round(scaled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (T·B, ...)
        mode = self.mode
        if mode == ORIGINAL:
            self.observation = Observation(x.detach())
            return x
        k = self.scale.to(x.dtype)
        if mode == ROUNDING:
            r = self._round(k * x)
            self.observation = Observation(x.detach(), r.detach())
            return r / k

        clip = x.unflatten(0, (self.steps, -1))  # (T, B, ...)
        dt = self.delta_dtype
        if mode == TEMPORAL_DIFFERENCE:
            d, last = temporal_difference(clip.to(dt), self._state_or_zeros(clip, dt))
            self._stage(last)
            self.observation = Observation(x.detach())
            return d.flatten(0, 1)

        # sigma-delta: levels in the model's dtype (rounding: bit-identical to the rounding network), difference in dt
        k = self.message_scale.to(x.dtype)
        r = self._levels(k * clip)
        s, last = temporal_difference(r.to(dt), self._state_or_zeros(r, dt))
        self._stage(last)
        rounded = r if self.scheme == SIGMA_DELTA_SCHEME else torch.round(self.scale.to(x.dtype) * clip)
        # r: the rounding network's integers, at the same scale
        self.observation = Observation(x.detach(), rounded.flatten(0, 1).detach(), s.flatten(0, 1).detach())
        return s.flatten(0, 1) / k.to(dt)

    def extra_repr(self) -> str:
        scheme = "" if self.scheme == SIGMA_DELTA_SCHEME else f", scheme={self.scheme}({self.scheme_param:g})"
        return f"name={self.name!r}, scale_shape={tuple(self.log_scale.shape)}" + scheme


_LINEAR_FUNCTIONS = {"linear": F.linear, "conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}


class SigmaDeltaLinear(StatefulMixin, nn.Module):
    """A linear operation (fully connected or convolution) whose output is integrated in the delta modes.

    .. math::

        u_t = W m_t + b \\quad\\text{(original, rounding)}, \\qquad
        u_t = \\sum_{\\tau \\le t} W m_\\tau + b \\quad\\text{(temporal-difference, sigma-delta)}

    The bias is added once, after integration, never once per increment. ``W m`` is computed in the dtype of
    the increments ``m`` (:attr:`delta_dtype`); the running sum carried from call to call is kept in
    :attr:`state_dtype` (float64), so that it does not drift over long streams (see
    :func:`~sigmadelta.core.functional.integrate`). In a float64 model the sigma-delta output stays within ~1e-9 of
    the rounding network's over 10,000 steps (paper-notes, section 4).

    Args:
        name: the layer's name (module path in the original model).
        kind: ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``.
        weight: the weight, with any following BatchNorm already folded in.
        bias: the bias or ``None``.
        conv_args: ``stride``, ``padding``, ``dilation``, ``groups`` for convolutions.
    """

    state_dtype: torch.dtype = torch.float64

    def __init__(
        self,
        name: str,
        kind: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        conv_args: dict | None = None,
    ):
        super().__init__()
        if kind not in _LINEAR_FUNCTIONS:
            raise ValueError(f"layer {name!r}: unknown linear kind {kind!r}")
        self.name = name
        self.kind = kind
        self.conv_args = dict(conv_args or {})
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._init_state("total")  # Σ W m up to the previous step, [B, out...], state_dtype

    def linear(self, m: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return _LINEAR_FUNCTIONS[self.kind](m, weight, bias, **self.conv_args)

    def forward(self, m: torch.Tensor) -> torch.Tensor:  # m: (T·B, in...)
        if self.mode not in STATEFUL_MODES:
            return self.linear(m, self.weight, self.bias)
        dt = m.dtype  # the quantizer sends increments in its delta_dtype
        increments = self.linear(m, self.weight.to(dt)).unflatten(0, (self.steps, -1))  # (T, B, out...)
        bias = None
        if self.bias is not None:
            # bias is (C_out,); outputs are (T, B, C_out, *spatial) for convs and (T, B, ..., C_out) for linear
            spatial = int(self.kind[-2]) if self.kind.startswith("conv") else 0
            bias = self.bias.to(dt).reshape(-1, *([1] * spatial))
        u, total = integrate(increments, self._state_or_zeros(increments, self.state_dtype), offset=bias,
                             overwrite=True)  # the increments are a temporary of this call
        self._stage(total)
        return u.flatten(0, 1).to(self.weight.dtype)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.conv_args.items())
        return f"name={self.name!r}, kind={self.kind}, weight={tuple(self.weight.shape)}" + (f", {args}" if args else "")
