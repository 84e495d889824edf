"""Index maps of the event engine, built once per layer and batch size: which output pixels an input pixel
reaches through a convolution or a pooling window, and which input pixels a pooling window reads.

Pixels are numbered per stream in row-major order over the spatial dimensions (``p = flat(position)``); a
value of ``B`` streams holds row ``b·P + p`` for pixel ``p`` of stream ``b`` (channels-last *rows*). The maps
are per stream (``[P, K]``): the kernels add ``b·P`` themselves.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["conv_taps", "dense_taps", "pool_windows", "reach_of", "pad_rows"]


def _axis_targets(size_in: int, size_out: int, kernel: int, stride: int, before: int, dilation: int) -> np.ndarray:
    """``[size_in, kernel]``: the output index ``o`` with ``o·stride − before + κ·dilation = p``, or -1."""
    p = np.arange(size_in)[:, None]
    num = p + before - np.arange(kernel)[None, :] * dilation
    o = num // stride
    return np.where((num % stride == 0) & (o >= 0) & (o < size_out), o, -1)


def conv_taps(in_spatial, out_spatial, kernel, stride, before, dilation) -> tuple[np.ndarray, ...]:
    """The taps of a convolution, per input pixel: ``(ntap [P_in], tap_k [P_in, K], tap_o [P_in, K])``.

    A convolution computes ``y[o] = Σ_κ w[κ] x[o·stride − before + κ·dilation]`` per spatial dimension, so input
    pixel ``p`` reaches output pixel ``o`` through kernel tap ``κ`` (flattened like ``weight[..., k_1, ..., k_d]``)
    where that holds in every dimension. ``before`` is the padding before each dimension (the convolution's own
    plus any constant zero padding folded into it). The valid taps of a pixel come first, in tap order; entries
    past ``ntap[p]`` are -1.
    """
    d = len(in_spatial)
    o_flat = np.zeros([1] * (2 * d), np.int64)  # broadcast to (S_in..., K...)
    valid = np.ones([1] * (2 * d), bool)
    for i in range(d):
        t = _axis_targets(in_spatial[i], out_spatial[i], kernel[i], stride[i], before[i], dilation[i])
        shape = [1] * (2 * d)
        shape[i], shape[d + i] = in_spatial[i], kernel[i]
        t = t.reshape(shape)
        valid = valid & (t >= 0)
        o_flat = o_flat + np.maximum(t, 0) * math.prod(out_spatial[i + 1:])
    p_in, kk = math.prod(in_spatial), math.prod(kernel)
    o_flat = np.broadcast_to(o_flat, (*in_spatial, *kernel)).reshape(p_in, kk)
    valid = np.broadcast_to(valid, (*in_spatial, *kernel)).reshape(p_in, kk)
    order = np.argsort(~valid, axis=1, kind="stable")  # valid taps first, in tap order
    taps = np.broadcast_to(np.arange(kk), (p_in, kk))
    valid = np.take_along_axis(valid, order, 1)
    tap_k = np.where(valid, np.take_along_axis(taps, order, 1), -1).astype(np.int32)
    tap_o = np.where(valid, np.take_along_axis(o_flat, order, 1), -1).astype(np.int32)
    return valid.sum(1).astype(np.int32), np.ascontiguousarray(tap_k), np.ascontiguousarray(tap_o)


def dense_taps(p_in: int) -> tuple[np.ndarray, ...]:
    """Taps of a fully connected layer on ``p_in`` pixels flattened into one vector: pixel ``p`` reaches the one
    output through tap ``p`` (the weight block of that pixel)."""
    return (np.ones(p_in, np.int32), np.arange(p_in, dtype=np.int32).reshape(p_in, 1),
            np.zeros((p_in, 1), np.int32))


def pool_windows(in_spatial, out_spatial, kernel, stride, padding, dilation) -> tuple[np.ndarray, np.ndarray]:
    """The input pixels each pooling window reads: ``(nwin [P_out], win [P_out, K])``, padding left out.

    Window ``o`` reads ``x[o·stride − padding + κ·dilation]`` per dimension; ``out_spatial`` (from the op itself,
    so ``ceil_mode`` is already decided) fixes how many windows there are.
    """
    d = len(in_spatial)
    per_axis = []
    for i in range(d):
        axis = []
        for o in range(out_spatial[i]):
            starts = [o * stride[i] - padding[i] + k * dilation[i] for k in range(kernel[i])]
            axis.append([q for q in starts if 0 <= q < in_spatial[i]])
        per_axis.append(axis)
    in_strides = [math.prod(in_spatial[i + 1:]) for i in range(d)]
    p_out, kk = math.prod(out_spatial), math.prod(kernel)
    nwin = np.zeros(p_out, np.int32)
    win = np.full((p_out, kk), -1, np.int32)
    for o, position in enumerate(itertools.product(*[range(n) for n in out_spatial])):
        sources = [sum(q * s for q, s in zip(combo, in_strides))
                   for combo in itertools.product(*[per_axis[i][position[i]] for i in range(d)])]
        if not sources:
            raise ValueError(f"pooling window {position} reads no input pixel")
        nwin[o] = len(sources)
        win[o, :len(sources)] = sources
    return nwin, win


def reach_of(nwin: np.ndarray, win: np.ndarray, p_in: int) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`pool_windows`: per input pixel, the windows that read it, ``(nrev [P_in], rev)``."""
    lists = [[] for _ in range(p_in)]
    for o in range(len(nwin)):
        for q in win[o, :nwin[o]]:
            lists[q].append(o)
    width = max(1, max(len(l) for l in lists))
    nrev = np.array([len(l) for l in lists], np.int32)
    rev = np.full((p_in, width), -1, np.int32)
    for p, l in enumerate(lists):
        rev[p, :len(l)] = l
    return nrev, rev


def pad_rows(in_spatial, before, out_spatial) -> np.ndarray:
    """Pixel of the padded value that each pixel of the unpadded one lands on, per stream: ``[P_in]``."""
    grids = np.meshgrid(*[np.arange(n) + b for n, b in zip(in_spatial, before)], indexing="ij")
    flat = np.zeros(tuple(in_spatial), np.int64)
    for i, g in enumerate(grids):
        flat += g * math.prod(out_spatial[i + 1:])
    return flat.reshape(-1).astype(np.int32)
