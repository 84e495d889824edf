"""Compiled kernels of the event engine: activations and the delta quantizers, on the touched rows only.

Every kernel works on channels-last *rows* (``[R, C]``, row ``b·P + p`` = pixel ``p`` of stream ``b``; a fully
connected layer's input is one row per stream) and on a list of the rows to visit (``rows[:n_rows]``). Written
branch-free where it matters: per row, one vectorised pass per phase (activation, level recurrence), then the
nonzero messages are compacted by advancing a count, never by a branch per unit.

Schemes (the ``scheme`` argument; :mod:`sigmadelta.functional`), with ``v = k·x`` and ``L`` the unit's level:

- ``ROUND`` (the paper's):  ``L_t = round(v_t)`` (half to even, as ``torch.round``);
- ``HYSTERESIS``:            ``L_t = round(v_t)`` if ``|v_t − L_{t−1}| ≥ thr`` else ``L_{t−1}`` (``thr = ½ + h``);
- ``THRESHOLD``:             ``L_t = v_t`` if ``|v_t − L_{t−1}| > thr`` else ``L_{t−1}`` (``thr = θ``, ``k = 1``).

The message of a unit is ``s_t / k = (L_t − L_{t−1}) / k``, sent only where it is nonzero. Every product and
comparison is made in the model's dtype in the order the dense simulation makes it (``fl(k·x)``, then the
comparison with ``thr`` cast to that dtype), so both see the same levels for the same ``x``.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

__all__ = ["CLAMP", "HARDSWISH", "HARDSIGMOID", "ROUND", "HYSTERESIS", "THRESHOLD", "activate",
           "quantize_rows", "quantize_planes"]

# activation codes: what a value applies to its source on the fly (``lo``/``hi``: per-channel bounds of CLAMP,
# which covers the identity, ReLU, ReLU6, hardtanh and clamp)
CLAMP, HARDSWISH, HARDSIGMOID = 0, 1, 2
# scheme codes
ROUND, HYSTERESIS, THRESHOLD = 0, 1, 2


@jit
def activate(x, c0, act, lo, hi, out):
    """``out[c] = act(x[c0 + c])`` for one row, ``c < len(out)``; the branch on ``act`` is outside the loops."""
    C = out.shape[0]
    if act == CLAMP:
        for c in range(C):
            v = x[c0 + c]
            v = v if v > lo[c] else lo[c]
            out[c] = v if v < hi[c] else hi[c]
    elif act == HARDSWISH:  # torch: x · min(max(x + 3, 0), 6) / 6
        for c in range(C):
            v = x[c0 + c]
            g = v + 3.0
            g = g if g > 0.0 else 0.0
            g = g if g < 6.0 else 6.0
            out[c] = v * g / 6.0
    else:  # HARDSIGMOID: torch: min(max(x + 3, 0), 6) / 6
        for c in range(C):
            g = x[c0 + c] + 3.0
            g = g if g > 0.0 else 0.0
            g = g if g < 6.0 else 6.0
            out[c] = g / 6.0


@jit
def _levels(x, k, level, scheme, thr, sd):
    """One row's level recurrence: updates ``level`` in place, writes the messages ``sd = s / k``; returns the
    number of nonzero messages. ``x``, ``k``, ``level``, ``sd``: ``[C]``."""
    C = x.shape[0]
    count = 0
    if scheme == ROUND:
        for c in range(C):
            L = np.rint(x[c] * k[c])
            s = L - level[c]
            level[c] = L
            sd[c] = s / k[c]
            count += s != 0.0
    elif scheme == HYSTERESIS:
        for c in range(C):
            v = x[c] * k[c]
            last = level[c]
            L = np.rint(v) if abs(v - last) >= thr else last
            s = L - last
            level[c] = L
            sd[c] = s / k[c]
            count += s != 0.0
    else:
        for c in range(C):
            v = x[c] * k[c]
            last = level[c]
            L = v if abs(v - last) > thr else last
            s = L - last
            level[c] = L
            sd[c] = s / k[c]
            count += s != 0.0
    return count


@jit
def quantize_rows(rows, n_rows, src, c0, act, lo, hi, k, scheme, thr, level, cap, pix, ptr, ch, val, tmp, sd):
    """The quantizer of one layer input on the rows ``rows[:n_rows]``, emitting the layer's messages as CSR.

    For each row ``i``: ``x = act(src[i, c0:c0+C])`` (the input, computed from its source on the fly), the level recurrence of ``scheme`` on ``level[i]`` with the
    scales ``k[i mod P_k]`` (``k``: ``[P_k, C]``, one row for per-layer or per-channel scales), and, where some
    message is nonzero, the row's entry in the CSR list: ``pix[a] = i``, its channels ``ch[ptr[a]:ptr[a+1]]`` and
    messages ``val[...]`` (``s / k``). Rows are listed in visiting order.

    Emission stops (the count goes on) once the list would pass ``cap`` messages: the consumer then runs densely
    from ``level``, which is always complete. Returns ``(n_pix, nnz)``; ``nnz > cap`` means the list is partial.
    """
    C = level.shape[1]
    Pk = k.shape[0]
    nnz = 0
    n_pix = 0
    ptr[0] = 0
    for a in range(n_rows):
        i = rows[a]
        activate(src[i], c0, act, lo, hi, tmp)
        count = _levels(tmp, k[i % Pk], level[i], scheme, thr, sd)
        if count == 0:
            continue
        if nnz + count <= cap:
            j = nnz
            for c in range(C):  # compaction: write every channel, advance past the nonzero ones
                ch[j] = c
                val[j] = sd[c]
                j += sd[c] != 0.0
            pix[n_pix] = i
            n_pix += 1
            ptr[n_pix] = j
        nnz += count
    return n_pix, nnz


@jit
def _plane_levels(x, kc, level, scheme, thr, sd, flags):
    """One plane segment's level recurrence (``x``, ``level``, ``sd``, ``flags``: ``[n]`` pixels of one channel);
    ``sd = s / k``, ``flags |= s ≠ 0``; returns the count of nonzero messages."""
    count = 0
    if scheme == ROUND:
        for j in range(x.shape[0]):
            L = np.rint(x[j] * kc)
            s = L - level[j]
            level[j] = L
            sd[j] = s / kc
            flags[j] |= s != 0.0
            count += s != 0.0
    elif scheme == HYSTERESIS:
        for j in range(x.shape[0]):
            v = x[j] * kc
            last = level[j]
            L = np.rint(v) if abs(v - last) >= thr else last
            s = L - last
            level[j] = L
            sd[j] = s / kc
            flags[j] |= s != 0.0
            count += s != 0.0
    else:
        for j in range(x.shape[0]):
            v = x[j] * kc
            last = level[j]
            L = v if abs(v - last) > thr else last
            s = L - last
            level[j] = L
            sd[j] = s / kc
            flags[j] |= s != 0.0
            count += s != 0.0
    return count


BLOCK = 64  # pixels per block of quantize_planes: its scratch [C, BLOCK] stays in the L1 cache


@jit
def quantize_planes(frame, k, scheme, thr, level, cap, pix, ptr, ch, val, sd, flags):
    """The quantizer of a network's image input, read straight from the frame ``[B, C, P]`` (NCHW), every unit.

    Pixels go in blocks of :data:`BLOCK`: the level recurrence runs plane by plane over the block (vectorised
    over pixels; ``level``: ``[B, C, P]``, ``k``: ``[C]``), its messages ``s / k`` into the scratch
    ``sd [C, BLOCK]`` and a mark per pixel with a message into ``flags [BLOCK]``; then the block's marked pixels
    are emitted as rows ``b·P + p`` as in :func:`quantize_rows` (a quiet block costs no emission pass).
    Returns ``(n_pix, nnz)``.
    """
    B, C, P = frame.shape
    nnz = 0
    n_pix = 0
    ptr[0] = 0
    for b in range(B):
        for p0 in range(0, P, BLOCK):
            n = min(BLOCK, P - p0)
            flags[:n] = 0
            count = 0
            for c in range(C):
                count += _plane_levels(frame[b, c, p0:p0 + n], k[c], level[b, c, p0:p0 + n], scheme, thr,
                                       sd[c, :n], flags[:n])
            if count == 0:
                continue
            if nnz + count <= cap:
                j = nnz
                for q in range(n):
                    if flags[q]:
                        for c in range(C):
                            ch[j] = c
                            val[j] = sd[c, q]
                            j += sd[c, q] != 0.0
                        pix[n_pix] = b * P + p0 + q
                        n_pix += 1
                        ptr[n_pix] = j
            nnz += count
    return n_pix, nnz
