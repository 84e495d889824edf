"""The sparse engine's linear steps: fully connected layers and convolutions on their active inputs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.modules import SigmaDeltaLinear
from ._indexmaps import conv_targets, is_identity_conv
from .quantize import QuantizeStep
from .values import ALL, Step, Value

__all__ = ["LinearStep", "ConvStep"]

_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}
_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # memory formats that store (N, C, *S) as rows


class LinearStep(Step):
    """A fully connected layer on the nonzero integers of its input.

    .. math:: a_t = a_{t-1} + \\frac{1}{k} \\sum_{i: s_{t,i} \\ne 0} s_{t,i} W_{:,i}, \\qquad u_t = a_t + b

    ``Wᵀ`` is stored contiguous so that the column of input ``i`` is one contiguous row, and
    ``F.embedding_bag`` sums the active rows weighted by their integers without materialising them. ``a`` is
    kept in float64. Above :data:`DENSE_ABOVE` ``["linear"]`` active inputs, ``a_t = W r_t / k``.
    """

    kind = "linear"

    def __init__(self, name: str, layer: SigmaDeltaLinear, q: QuantizeStep, out: Value):
        super().__init__(name)
        self.layer, self.q, self.out = layer, q, out
        dtype = out.buf.dtype
        self.weight = layer.weight.detach().to(dtype)  # (n_out, n_in)
        self.sparse = not q.rowwise and q.x.buf.dim() == 2  # flat (B, n_in) input
        self.weight_t = self.weight.t().contiguous() if self.sparse else None  # (n_in, n_out)
        self.bias = (torch.zeros(self.weight.shape[0], dtype=torch.float64) if layer.bias is None
                     else layer.bias.detach().to(torch.float64))
        self.acc = torch.zeros(out.buf.shape, dtype=torch.float64)  # a_t: Σ W s / k, (B, ..., n_out)
        self.work_per_active = self.weight.shape[0]  # multiply-adds per nonzero input: n_out
        self.dense_work = q.numel_rows * self.weight.shape[0]
        self.max_active = 0.0  # set by the engine from its dense_above table

    def reset(self) -> None:
        self.acc.zero_()

    def run(self, fresh: bool) -> None:
        q = self.q
        self.active_rows += q.n_act
        if q.n_act == 0 and not fresh:
            self.out.dirty = None
            self.paths["idle"] += 1
            return
        if fresh or not self.sparse or q.n_act > self.max_active:
            self.paths["dense"] += 1
            # dense: the rounding network's pre-activation W r / k (also resets accumulated rounding error)
            self.acc.copy_(F.linear(q.r_logical / q.k, self.weight))
        else:
            self.paths["sparse"] += 1
            s = q.s_full  # (B, n_in)
            batch, n_in = s.shape
            flat = q.act  # (nnz,) indices into s.view(-1), sorted by stream
            weights = s.view(-1).index_select(0, flat)  # (nnz,) the integers
            inputs = flat if batch == 1 else flat.remainder(n_in)
            if q.k_scalar is None:
                weights = weights / q.k.reshape(-1).index_select(0, inputs)
            if batch == 1:
                inc = F.embedding_bag(inputs.view(1, -1), self.weight_t, per_sample_weights=weights.view(1, -1),
                                      mode="sum")  # (1, n_out)
            else:
                offsets = torch.searchsorted(flat.div(n_in, rounding_mode="floor"), torch.arange(batch))
                inc = F.embedding_bag(inputs, self.weight_t, offsets, per_sample_weights=weights, mode="sum")
            if q.k_scalar is None:
                self.acc.add_(inc)
            else:
                self.acc.add_(inc, alpha=1.0 / q.k_scalar)
        self.out.buf.copy_(self.acc + self.bias)
        self.out.dirty = ALL

    def state_nbytes(self) -> int:
        return self.acc.numel() * self.acc.element_size()

    def plan_nbytes(self) -> int:
        t = self.weight_t
        return 0 if t is None else t.numel() * t.element_size()


class ConvStep(Step):
    """A convolution that updates only the output pixels its active input pixels reach.

    For active input rows ``p`` with integers ``s_p ∈ ℤ^{C_in}`` and kernel taps ``κ``:

    .. math:: u_t[\\mathrm{tgt}(p, κ)] \\mathrel{+}= W_κ^{\\top} s_{t,p} / k

    computed as one product ``[n_act, C_in] @ [C_in, K·C_out]`` (groups = 1), an elementwise product with
    ``[K, C]`` (depthwise), or a batched product per group, then ``index_add_`` into the output rows
    ``tgt`` (a precomputed ``[R_in, K]`` map; taps outside the output go to a trash row). ``u`` itself (bias
    included) is the state. Above :data:`DENSE_ABOVE` active input rows the frame recomputes
    ``u_t = conv(r_t / k) + b`` densely.
    """

    kind = "conv"

    def __init__(self, name: str, layer: SigmaDeltaLinear, q: QuantizeStep, out: Value):
        super().__init__(name)
        self.layer, self.q, self.out = layer, q, out
        x_shape, y_shape = q.x.shape, out.shape
        dtype = out.buf.dtype
        weight = layer.weight.detach().to(dtype)  # (C_out, C_in/G, *K)
        self.weight = weight
        self.bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        self.weight_over_k, self._k_version = None, None
        self.fn = _CONV[layer.kind]
        d = weight.dim() - 2
        args = layer.conv_args

        def per_dim(v, default):
            v = args.get(v, default)
            return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d

        stride, padding, dilation = per_dim("stride", 1), per_dim("padding", 0), per_dim("dilation", 1)
        self.groups = groups = args.get("groups", 1)
        self.sparse = q.rowwise and not isinstance(args.get("padding", 0), str)
        c_out, c_in_g, *kernel = weight.shape
        c_in, kk = c_in_g * groups, math.prod(kernel)
        self.c_out, self.kk = c_out, kk
        in_sp, out_sp = x_shape[2:], y_shape[2:]
        self.identity = self.sparse and is_identity_conv(in_sp, out_sp, kernel, stride, padding, dilation)
        self.targets = None
        if self.sparse and not self.identity:
            self.targets = conv_targets(in_sp, out_sp, kernel, stride, padding, dilation, x_shape[0])  # (R_in, K)
            self.mask = torch.zeros(out.nrows + 1, dtype=torch.bool)  # output rows reached this frame
        taps = weight.reshape(c_out, c_in_g, kk)  # (C_out, C_in/G, K)
        if groups == 1:
            self.variant = "pointwise" if kk == 1 else "conv"
            self.w = taps.permute(1, 2, 0).reshape(c_in, kk * c_out).contiguous()  # (C_in, K·C_out)
        elif c_in_g == 1 and c_out == c_in:
            self.variant = "depthwise"
            self.w = taps.reshape(c_out, kk).t().contiguous()  # (K, C)
        else:
            self.variant = "grouped"
            c_out_g = c_out // groups
            self.w = (taps.reshape(groups, c_out_g, c_in_g, kk).permute(0, 2, 3, 1)
                      .reshape(groups, c_in_g, kk * c_out_g).contiguous())  # (G, C_in/G, K·C_out/G)
        self.work_per_active = c_in_g * kk * c_out  # multiply-adds per active input row (all taps)
        self.dense_work = out.nrows * c_out * c_in_g * kk  # multiply-adds of the dense convolution
        self.max_active = 0.0  # set by the engine from its dense_above table

    def reset(self) -> None:
        self.out.storage.zero_()

    def _dense(self) -> None:
        """``u_t = conv(r_t, W / k) + b``: ``1/k`` folded into the weights (per-channel scales divide ``r``)."""
        q = self.q
        if q.k_scalar is None:
            y = self.fn(q.r_logical / q.k, self.weight, self.bias, **self.layer.conv_args)
        else:
            if self._k_version != q.scale_version:
                self._k_version, self.weight_over_k = q.scale_version, self.weight / q.k
            y = self.fn(q.r_logical, self.weight_over_k, self.bias, **self.layer.conv_args)
        if self.out.rows is not None and y.dim() in _LAST and y.is_contiguous(memory_format=_LAST[y.dim()]):
            self.out.adopt(y)  # no copy; the storage takes it back on the next sparse frame
        else:
            self.out.buf.copy_(y)
            self.out.dirty = ALL

    def run(self, fresh: bool) -> None:
        q, out = self.q, self.out
        n = q.n_act
        self.active_rows += n
        if n == 0 and not fresh:
            out.dirty = None
            self.paths["idle"] += 1
            return
        if fresh or not self.sparse or n > self.max_active:
            self.paths["dense"] += 1
            self._dense()
            return
        self.paths["sparse"] += 1
        out.own()
        act, s = q.message()
        s = s / q.k_rows  # (n, C_in)
        if self.variant in ("pointwise", "conv"):
            contrib = s @ self.w  # (n, K·C_out)
        elif self.variant == "depthwise":
            contrib = s.unsqueeze(1) * self.w  # (n, K, C)
        else:
            g = self.groups
            contrib = torch.bmm(s.view(n, g, -1).transpose(0, 1), self.w)  # (G, n, K·C_out/G)
            contrib = contrib.view(g, n, self.kk, -1).permute(1, 2, 0, 3)  # (n, K, G, C_out/G)
        contrib = contrib.reshape(-1, self.c_out)  # (n·K, C_out), tap-major within each active row
        if self.identity:
            out.storage.index_add_(0, act, contrib)
            out.dirty = act
            return
        tgt = self.targets.index_select(0, act).view(-1)  # (n·K,) output rows, trash row for none
        out.storage.index_add_(0, tgt, contrib)
        out.storage[-1].zero_()  # the trash row
        mask = self.mask
        mask.index_fill_(0, tgt, True)
        out.dirty = mask[:-1].nonzero().squeeze(1)  # (n_dirty,) sorted output rows
        mask.zero_()

    def state_nbytes(self) -> int:
        return self.out.nbytes()  # u is the layer's state

    def plan_nbytes(self) -> int:
        n = self.w.numel() * self.w.element_size()
        if self.targets is not None:
            n += self.targets.numel() * self.targets.element_size() + self.mask.numel()
        return n

