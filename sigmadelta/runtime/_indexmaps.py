"""Index maps of the sparse engine: which output rows an input row reaches, and where padding moves a row.

Activations of ``d`` spatial dimensions are stored channels-last, as *rows*: a value of logical shape
``[B, C, *S]`` is a ``[B·prod(S), C]`` matrix whose row ``b·prod(S) + flat(p)`` is the channel vector of
position ``p`` of stream ``b``. A sparse kernel gathers and scatters whole rows, so a row index is all it
needs. These maps are built once per layer and batch size (the *plan*) and then indexed every frame.
"""

from __future__ import annotations

import math

import torch

__all__ = ["conv_targets", "is_identity_conv", "pad_rows", "batch_rows"]


def _per_dim_targets(size_in: int, size_out: int, kernel: int, stride: int, pad: int, dilation: int) -> torch.Tensor:
    """``[size_in, kernel]``: the output index that input ``p`` reaches through kernel tap ``κ``, or -1.

    A convolution computes ``y[o] = Σ_κ w[κ] x[o·stride − pad + κ·dilation]``, so input ``p`` reaches output
    ``o = (p + pad − κ·dilation) / stride`` when that is an integer in ``[0, size_out)``.
    """
    p = torch.arange(size_in).unsqueeze(1)  # (size_in, 1)
    kappa = torch.arange(kernel).unsqueeze(0)  # (1, kernel)
    num = p + pad - kappa * dilation
    o = torch.div(num, stride, rounding_mode="floor")
    valid = (num % stride == 0) & (o >= 0) & (o < size_out)
    return torch.where(valid, o, torch.full_like(o, -1))


def conv_targets(in_spatial, out_spatial, kernel, stride, padding, dilation, batch: int) -> torch.Tensor:
    """Output row reached by each input row and kernel tap, for ``batch`` streams.

    Args:
        in_spatial, out_spatial: spatial shapes ``S_in``, ``S_out`` of the convolution's input and output.
        kernel, stride, padding, dilation: per spatial dimension (sequences of length ``d``).
        batch: streams ``B``.

    Returns:
        int64 ``[B·prod(S_in), prod(kernel)]``; taps that fall outside the output (borders, stride) point at
        the *trash row* ``B·prod(S_out)``, one past the last output row, so a scatter needs no masking. Taps
        are ordered like ``weight[..., k_1, ..., k_d].flatten()``.
    """
    d = len(in_spatial)
    combined = torch.zeros([1] * (2 * d), dtype=torch.long)  # (S_in..., K...) after broadcasting
    invalid = torch.zeros([1] * (2 * d), dtype=torch.bool)
    out_strides = [math.prod(out_spatial[i + 1:]) for i in range(d)]
    for i in range(d):
        t = _per_dim_targets(in_spatial[i], out_spatial[i], kernel[i], stride[i], padding[i], dilation[i])
        shape = [1] * (2 * d)
        shape[i], shape[d + i] = in_spatial[i], kernel[i]
        t = t.reshape(shape)
        invalid = invalid | (t < 0)
        combined = combined + t.clamp(min=0) * out_strides[i]
    p_in, p_out, kk = math.prod(in_spatial), math.prod(out_spatial), math.prod(kernel)
    combined = combined.expand(*in_spatial, *kernel).reshape(p_in, kk)
    invalid = invalid.expand(*in_spatial, *kernel).reshape(p_in, kk)
    offsets = (torch.arange(batch) * p_out).reshape(batch, 1, 1)  # stream b's outputs start at b·P_out
    rows = (combined.unsqueeze(0) + offsets).reshape(batch * p_in, kk)
    trash = batch * p_out
    return torch.where(invalid.repeat(batch, 1), torch.full_like(rows, trash), rows)


def is_identity_conv(in_spatial, out_spatial, kernel, stride, padding, dilation) -> bool:
    """A 1×1 convolution with stride 1 and no padding: input row i reaches exactly output row i."""
    return (tuple(in_spatial) == tuple(out_spatial) and all(k == 1 for k in kernel)
            and all(s == 1 for s in stride) and all(p == 0 for p in padding))


def pad_rows(in_spatial, pads_before, out_spatial, batch: int) -> torch.Tensor:
    """Row of the padded value that each row of the unpadded value lands on: int64 ``[B·prod(S_in)]``.

    Args:
        in_spatial, out_spatial: spatial shapes before and after padding.
        pads_before: padding added before each spatial dimension (``F.pad``'s left/top/front amounts).
        batch: streams ``B``.
    """
    grids = torch.meshgrid(*[torch.arange(n) + b for n, b in zip(in_spatial, pads_before)], indexing="ij")
    flat = torch.zeros(in_spatial, dtype=torch.long)
    for i, g in enumerate(grids):
        flat += g * math.prod(out_spatial[i + 1:])
    return batch_rows(flat.reshape(-1), math.prod(out_spatial), batch)


def batch_rows(rows: torch.Tensor, per_stream: int, batch: int) -> torch.Tensor:
    """Repeat a per-stream row map for ``batch`` streams: stream ``b``'s rows are offset by ``b·per_stream``."""
    return (rows.unsqueeze(0) + torch.arange(batch).unsqueeze(1) * per_stream).reshape(-1)
