"""Compiled kernels of the event engine: activations and the delta quantizers, on the touched rows only.

Every kernel works on channels-last *rows* (``[R, C]``, row ``b·P + p`` = pixel ``p`` of stream ``b``; a fully
connected layer's input is one row per stream) and on a list of the rows to visit (``rows[:n_rows]``). Written
branch-free where it matters: per row, one vectorised pass per phase (activation, level recurrence), then the
nonzero messages are compacted by advancing a count, never by a branch per unit.

Schemes (the ``scheme`` argument; :mod:`sigmadelta.core.functional`), with ``v = k·x`` and ``L`` the unit's level:

- ``ROUND`` (the paper's):  ``L_t = round(v_t)`` (half to even, as ``torch.round``);
- ``HYSTERESIS``:            ``L_t = round(v_t)`` if ``|v_t − L_{t−1}| ≥ thr`` else ``L_{t−1}`` (``thr = ½ + h``);
- ``THRESHOLD``:             ``L_t = v_t`` if ``|v_t − L_{t−1}| > thr`` else ``L_{t−1}`` (``thr = θ``, ``k = 1``).

The message of a unit is ``s_t / k = (L_t − L_{t−1}) / k``, sent only where it is nonzero. Every product and
comparison is made in the model's dtype in the order the dense simulation makes it (``fl(k·x)``, then the
comparison with ``thr`` cast to that dtype), so both see the same levels for the same ``x``.

Specialisation: LLVM does not move a branch on ``act`` or ``scheme`` out of a loop, and a branch inside it stops
the loop from being vectorised (6x slower). So the loop bodies are written once, generic, inlined by numba
(``inline="always"``) into one small kernel per (activation, scheme) with those two as constants
(:data:`QUANTIZE_ROWS`, :data:`QUANTIZE_PLANES`), where the branches fold away. Rows are read through slices
indexed by the loop counter: an index like ``x[c0 + c]`` compiles to gathers.
"""

from __future__ import annotations

import numpy as np

import numba

from ._jit import jit

__all__ = ["CLAMP", "HARDSWISH", "HARDSIGMOID", "ROUND", "HYSTERESIS", "THRESHOLD", "activate", "QUANTIZE_ROWS",
           "QUANTIZE_PLANES", "BLOCK"]

# activation codes: what a value applies to its source on the fly (``lo``/``hi``: per-channel bounds of CLAMP,
# which covers the identity, ReLU, ReLU6, hardtanh and clamp)
CLAMP, HARDSWISH, HARDSIGMOID = 0, 1, 2
# scheme codes
ROUND, HYSTERESIS, THRESHOLD = 0, 1, 2


BLOCK = 64  # pixels per block of the image quantizer: its scratch [C, BLOCK] stays in the L1 cache


@numba.njit(inline="always", error_model="numpy")
def activate(x, act, lo, hi, out):
    """``out[c] = act(x[c])`` for one row (``x``, ``out``: ``[C]``; may be the same array); the branch on ``act``
    is outside the loops."""
    C = out.shape[0]
    if act == CLAMP:
        for c in range(C):
            v = x[c]
            v = v if v > lo[c] else lo[c]
            out[c] = v if v < hi[c] else hi[c]
    elif act == HARDSWISH:  # torch: x · min(max(x + 3, 0), 6) / 6
        for c in range(C):
            v = x[c]
            g = v + 3.0
            g = g if g > 0.0 else 0.0
            g = g if g < 6.0 else 6.0
            out[c] = v * g / 6.0
    else:  # HARDSIGMOID: torch: min(max(x + 3, 0), 6) / 6
        for c in range(C):
            g = x[c] + 3.0
            g = g if g > 0.0 else 0.0
            g = g if g < 6.0 else 6.0
            out[c] = g / 6.0


@numba.njit(inline="always", error_model="numpy")
def _level(v, last, scheme, thr):
    """``L_t = f(v_t, L_{t−1})`` of one unit (``scheme`` a constant where inlined)."""
    if scheme == ROUND:
        return np.rint(v)
    if scheme == HYSTERESIS:
        return np.rint(v) if abs(v - last) >= thr else last
    return v if abs(v - last) > thr else last


@numba.njit(inline="always", error_model="numpy")
def _quantize_rows(rows, n_rows, src, c0, act, lo, hi, k, scheme, thr, level, cap, pix, ptr, ch, val, sd):
    C = level.shape[1]
    Pk = k.shape[0]
    nnz = 0
    n_pix = 0
    ptr[0] = 0
    for a in range(n_rows):
        i = rows[a]
        x = src[i, c0:c0 + C]
        lv = level[i]
        kr = k[0] if Pk == 1 else k[i % Pk]
        count = 0
        for c in range(C):  # one vectorised pass: activation, level, message
            v = x[c]
            if act == CLAMP:
                v = v if v > lo[c] else lo[c]
                v = v if v < hi[c] else hi[c]
            elif act == HARDSWISH:
                g = v + 3.0
                g = g if g > 0.0 else 0.0
                g = g if g < 6.0 else 6.0
                v = v * g / 6.0
            else:
                g = v + 3.0
                g = g if g > 0.0 else 0.0
                g = g if g < 6.0 else 6.0
                v = g / 6.0
            v = v * kr[c]
            last = lv[c]
            L = _level(v, last, scheme, thr)
            s = L - last
            lv[c] = L
            sd[c] = s / kr[c]
            count += s != 0.0
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
def quantize_rows_clamp_round(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, CLAMP, lo, hi, k, ROUND, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_clamp_hysteresis(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, CLAMP, lo, hi, k, HYSTERESIS, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_clamp_threshold(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, CLAMP, lo, hi, k, THRESHOLD, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardswish_round(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSWISH, lo, hi, k, ROUND, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardswish_hysteresis(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSWISH, lo, hi, k, HYSTERESIS, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardswish_threshold(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSWISH, lo, hi, k, THRESHOLD, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardsigmoid_round(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSIGMOID, lo, hi, k, ROUND, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardsigmoid_hysteresis(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSIGMOID, lo, hi, k, HYSTERESIS, thr, level, cap, pix, ptr, ch, val, sd)


@jit
def quantize_rows_hardsigmoid_threshold(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd):
    return _quantize_rows(rows, n_rows, src, c0, HARDSIGMOID, lo, hi, k, THRESHOLD, thr, level, cap, pix, ptr, ch, val, sd)


QUANTIZE_ROWS = {  # (act, scheme) -> kernel
    (CLAMP, ROUND): quantize_rows_clamp_round, (CLAMP, HYSTERESIS): quantize_rows_clamp_hysteresis,
    (CLAMP, THRESHOLD): quantize_rows_clamp_threshold,
    (HARDSWISH, ROUND): quantize_rows_hardswish_round, (HARDSWISH, HYSTERESIS): quantize_rows_hardswish_hysteresis,
    (HARDSWISH, THRESHOLD): quantize_rows_hardswish_threshold,
    (HARDSIGMOID, ROUND): quantize_rows_hardsigmoid_round,
    (HARDSIGMOID, HYSTERESIS): quantize_rows_hardsigmoid_hysteresis,
    (HARDSIGMOID, THRESHOLD): quantize_rows_hardsigmoid_threshold,
}
"""The quantizer of one layer input on the rows ``rows[:n_rows]``, emitting the layer's messages as CSR.

``quantize_rows(rows, n_rows, src, c0, lo, hi, k, thr, level, cap, pix, ptr, ch, val, sd) -> (n_pix, nnz)``.
For each row ``i``: ``x = act(src[i, c0:c0+C])`` (the input, computed from its source on the fly), the level
recurrence on ``level[i]`` with the scales ``k[i mod P_k]`` (``k``: ``[P_k, C]``, one row for per-layer or
per-channel scales), and, where some message is nonzero, the row's entry in the CSR list: ``pix[a] = i``, its
channels ``ch[ptr[a]:ptr[a+1]]`` and messages ``val[...]`` (``s / k``), rows in visiting order. ``sd [C]`` is
scratch. Emission stops (the count goes on) once the list would pass ``cap`` messages: the consumer then runs
densely from ``level``, which is always complete. ``nnz > cap`` means the list is partial.
"""


@numba.njit(inline="always", error_model="numpy")
def _quantize_planes(frame, k, scheme, thr, level, cap, pix, ptr, ch, val, sd, flags):
    B, C, P = frame.shape
    nnz = 0
    n_pix = 0
    ptr[0] = 0
    for b in range(B):
        for p0 in range(0, P, BLOCK):
            n = min(BLOCK, P - p0)
            flags[:] = 0
            count = 0
            for c in range(C):
                x = frame[b, c, p0:p0 + n]
                lv = level[b, c, p0:p0 + n]
                s_c = sd[c]
                kc = k[c]
                for q in range(n):  # vectorised over pixels
                    last = lv[q]
                    L = _level(x[q] * kc, last, scheme, thr)
                    s = L - last
                    lv[q] = L
                    s_c[q] = s / kc
                    flags[q] |= s != 0.0
                    count += s != 0.0
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


@jit
def quantize_planes_round(frame, k, thr, level, cap, pix, ptr, ch, val, sd, flags):
    return _quantize_planes(frame, k, ROUND, thr, level, cap, pix, ptr, ch, val, sd, flags)


@jit
def quantize_planes_hysteresis(frame, k, thr, level, cap, pix, ptr, ch, val, sd, flags):
    return _quantize_planes(frame, k, HYSTERESIS, thr, level, cap, pix, ptr, ch, val, sd, flags)


@jit
def quantize_planes_threshold(frame, k, thr, level, cap, pix, ptr, ch, val, sd, flags):
    return _quantize_planes(frame, k, THRESHOLD, thr, level, cap, pix, ptr, ch, val, sd, flags)


QUANTIZE_PLANES = {ROUND: quantize_planes_round, HYSTERESIS: quantize_planes_hysteresis,
                   THRESHOLD: quantize_planes_threshold}
"""The quantizer of a network's image input, read straight from the frame ``[B, C, P]`` (NCHW), every unit.

``quantize_planes(frame, k, thr, level, cap, pix, ptr, ch, val, sd, flags) -> (n_pix, nnz)``. Pixels go in
blocks of :data:`BLOCK`: the level recurrence runs plane by plane over the block (vectorised over pixels;
``level``: ``[B, C, P]``, ``k``: ``[C]``), its messages ``s / k`` into the scratch ``sd [C, BLOCK]`` and a mark
per pixel with a message into ``flags [BLOCK]``; then the block's marked pixels are emitted as rows ``b·P + p``
as by the row kernels (a quiet block costs no emission pass).
"""
