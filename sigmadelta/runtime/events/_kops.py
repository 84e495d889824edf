"""Compiled kernels of the event engine for the ops between linear layers, on touched rows only: materialising
an activation, residual adds, constant padding, max-pooling and the global average.

Sources are read through an activation (:func:`~sigmadelta.runtime.events._kquant.activate`: ``act``, ``lo``,
``hi``, from channel ``c0`` of a wider buffer), so an activation whose only readers are these kernels and the
quantizers is never stored. ``touched``/``mark`` collect the rows a kernel changes (each once).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from ._kquant import activate

__all__ = ["apply_rows", "add_rows", "pad_rows", "maxpool_rows", "mean_rows", "collect_rows"]


@jit
def apply_rows(rows, n_rows, src, c0, act, lo, hi, out, oc0):
    """``out[i, oc0:oc0+C] = act(src[i, c0:c0+C])`` for the rows ``rows[:n_rows]``."""
    C = lo.shape[0]
    for a in range(n_rows):
        i = rows[a]
        activate(src[i, c0:c0 + C], act, lo, hi, out[i, oc0:oc0 + C])


@jit
def add_rows(rows_a, n_a, rows_b, n_b, a, ac0, b, bc0, out, mark, touched):
    """A residual add ``y = a + b`` on the union of both inputs' touched rows (each visited once); returns the
    count of rows written, listed in ``touched``."""
    C = out.shape[1]
    n = 0
    for j in range(n_a):
        t = rows_a[j]
        touched[n] = t
        n += 1 - mark[t]
        mark[t] = 1
    for j in range(n_b):
        t = rows_b[j]
        touched[n] = t
        n += 1 - mark[t]
        mark[t] = 1
    for j in range(n):
        t = touched[j]
        mark[t] = 0
        x, y, o = a[t, ac0:ac0 + C], b[t, bc0:bc0 + C], out[t]
        for c in range(C):
            o[c] = x[c] + y[c]
    return n


@jit
def pad_rows(rows, n_rows, src, c0, act, lo, hi, P_in, P_out, target, out, touched):
    """Constant padding: input pixel ``p`` of stream ``b`` lands on row ``b·P_out + target[p]`` (the border,
    filled once, never changes). Returns the count of rows written, listed in ``touched``."""
    C = out.shape[1]
    for a in range(n_rows):
        i = rows[a]
        b = i // P_in
        t = b * P_out + target[i - b * P_in]
        activate(src[i, c0:c0 + C], act, lo, hi, out[t])
        touched[a] = t
    return n_rows


@jit
def maxpool_rows(rows, n_rows, src, c0, act, lo, hi, P_in, P_out, nrev, rev, nwin, win, out, mark, touched):
    """Max-pooling, recomputed on the windows that read a touched input row:

    ``y[o] = act(max_{q ∈ window(o)} src[q])``: the activation (a clamp, nondecreasing) is applied after the
    maximum, where it gives the same value. Returns the count of windows recomputed, listed in ``touched``."""
    C = out.shape[1]
    n = 0
    for a in range(n_rows):
        i = rows[a]
        b = i // P_in
        p = i - b * P_in
        for m in range(nrev[p]):
            t = b * P_out + rev[p, m]
            touched[n] = t
            n += 1 - mark[t]
            mark[t] = 1
    for a in range(n):
        t = touched[a]
        mark[t] = 0
        b = t // P_out
        o = t - b * P_out
        y = out[t]
        x = src[b * P_in + win[o, 0], c0:c0 + C]
        for c in range(C):
            y[c] = x[c]
        for m in range(1, nwin[o]):
            x = src[b * P_in + win[o, m], c0:c0 + C]
            for c in range(C):
                v = x[c]
                y[c] = v if v > y[c] else y[c]
        activate(y, act, lo, hi, y)
    return n


@jit
def mean_rows(rows, n_rows, src, c0, act, lo, hi, P, full, last, sums, out, tmp, touched):
    """The mean over all pixels of each stream, updated by the touched rows only:

    ``Σ_b += act(src[i]) − last[i]; last[i] = act(src[i])`` in float64 (``sums [B, C]``; differences of two
    values of the model's dtype are exact in float64, so the sum does not drift), ``out[b] = Σ_b / P``. With
    ``full`` the sums restart from zero over every row (the dense frames). Returns the count of streams
    written, listed in ``touched``.
    """
    B, C = sums.shape
    if full:
        sums[:] = 0.0
        last[:] = 0.0
    moved = np.zeros(B, np.uint8)
    for a in range(n_rows):
        i = rows[a]
        b = i // P
        activate(src[i, c0:c0 + C], act, lo, hi, tmp)
        previous = last[i]
        total = sums[b]
        for c in range(C):
            total[c] += np.float64(tmp[c]) - np.float64(previous[c])
            previous[c] = tmp[c]
        moved[b] = 1
    n = 0
    for b in range(B):
        if moved[b]:
            for c in range(C):
                out[b, c] = sums[b, c] / P
            touched[n] = b
            n += 1
    return n


@jit
def collect_rows(rows, n_rows, mark, touched, n):
    """Append the rows ``rows[:n_rows]`` not yet in ``touched[:n]`` (``mark`` flags them); returns the new count."""
    for a in range(n_rows):
        t = rows[a]
        touched[n] = t
        n += 1 - mark[t]
        mark[t] = 1
    return n
