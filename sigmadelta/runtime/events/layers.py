"""The event engine's linear layers: a convolution or fully connected layer updated from its input's messages,
or recomputed densely when too many arrived.

.. math::

    u_t = u_{t-1} + W\\,(s_t / k) \\quad\\text{(events)}, \\qquad u_t = W\\,(L_t / k) + b \\quad\\text{(dense)}

with ``u_0`` from the dense form on a stream's first frame. Both give the sigma-delta network's value (the
rounding network's, ``Σ_τ s_τ = L_t``); the dense form also clears the rounding error the event sums gather.

Break-even: per layer, the engine keeps the measured time of its dense form (``t_dense``) and of its event
kernel per multiply-add (``t_mac``, an exponential average over the frames that ran it, first measured on
synthetic messages when the plan is built). A frame runs the events when ``nnz · taps · C_out/G · t_mac`` is
below ``t_dense``: :meth:`LayerStep.break_even` is that count of messages.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from ...core.modules import SigmaDeltaLinear
from ._kconv import clear_marks, conv_events, depthwise_events, grouped_events
from ._maps import conv_taps, dense_taps
from .quantize import QuantizeStep
from .values import TORCH_DTYPES, Source

__all__ = ["LayerStep"]

_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}
_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # memory formats that store (B, C, *S) as rows
EMA = 0.2  # weight of the newest timing in the exponential averages


def _average(mean: float, sample: float) -> float:
    """The exponential average with a new timing clipped to ``[mean/4, 2·mean]``: one call preempted by another
    process (a shared machine) moves it by 20% at most."""
    return (1 - EMA) * mean + EMA * min(max(sample, 0.25 * mean), 2 * mean)

AUTO, EVENTS, DENSE = 0, 1, 2  # policies (engine.POLICIES)


class LayerStep:
    """One linear layer (see the module docstring).

    Args:
        layer: the converted layer (weights with BatchNorm folded, bias, convolution arguments).
        q: the quantizer step that feeds it.
        out: where ``u`` lives: its own storage, or a channel slice of a concatenation's storage.
        pad: a constant zero padding folded into this convolution (``F.pad`` amounts), else ``None``.
    """

    kind = "layer"

    def __init__(self, layer: SigmaDeltaLinear, q: QuantizeStep, out: Source, pad=None):
        self.name, self.layer, self.q, self.out, self.pad = layer.name, layer, q, out, pad
        dtype = TORCH_DTYPES[out.storage.rows.dtype]
        self.weight = layer.weight.detach().to(dtype)
        self.bias = None if layer.bias is None else layer.bias.detach().to(dtype)
        self.conv = layer.kind != "linear"
        self.groups = layer.conv_args.get("groups", 1) if self.conv else 1
        self._dense_weight, self._dense_version = None, None
        self._layout(q)
        self.depthwise = None  # (W [K, C], a scratch row [C]) of a depthwise convolution's kernel
        if self.conv and self.groups > 1 and self.event_width == 1 and self.cin_g == 1:
            w = self.w_events[:, :, 0]  # (C, K)
            self.depthwise = np.ascontiguousarray(w.T), np.zeros(w.shape[0], w.dtype)
        self.dense_args = self._dense_args()
        self.owns_storage = out.c0 == 0 and out.channels == out.storage.rows.shape[1]
        self.macs_per_event = self.taps * self.event_width  # multiply-adds one message costs (interior pixel)
        self.dense_macs = math.prod(out.shape) * self.weight[0].numel()
        self.units_in = q.units
        # seconds (measured): the dense form; the event kernel's fixed cost per call and its cost per multiply-add
        self.t_dense, self.t_fixed, self.t_mac = 1.0, 0.0, 1.0
        self.policy = AUTO  # set by the engine
        self.paths = {"sparse": 0, "dense": 0, "idle": 0}
        self.events = 0  # messages received, summed over the frames after a stream's first

    def _layout(self, q: QuantizeStep) -> None:
        """The event kernel's weights ``[C_in, K, C_out/G]`` and taps."""
        w = self.weight.numpy()
        if not self.conv:
            n_out = w.shape[0]
            if q.flatten:  # the input is a [C, *S] value flattened: one tap per pixel
                c, p = q.source.channels, q.source.pixels
                self.w_events = np.ascontiguousarray(w.reshape(n_out, c, p).transpose(1, 2, 0))
                self.ntap, self.tap_k, self.tap_o = dense_taps(p)
                self.p_in, self.taps = p, 1
            else:
                self.w_events = np.ascontiguousarray(w.T[:, None, :])
                self.ntap, self.tap_k, self.tap_o = dense_taps(1)
                self.p_in, self.taps = 1, 1
            self.p_out, self.event_width, self.cin_g = 1, n_out, w.shape[1]
            return
        c_out, cin_g, *kernel = w.shape
        g = self.groups
        kk = math.prod(kernel)
        self.cin_g, self.event_width = cin_g, c_out // g
        self.w_events = np.ascontiguousarray(
            w.reshape(g, c_out // g, cin_g, kk).transpose(0, 2, 3, 1).reshape(g * cin_g, kk, c_out // g))
        d = len(kernel)
        args = self.layer.conv_args

        def per_dim(key, default):
            v = args.get(key, default)
            return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d

        in_sp = q.source.spatial
        out_sp = self.out.spatial
        before = per_dim("padding", 0)
        if self.pad is not None:  # F.pad lists the last dimension first
            before = tuple(b + self.pad[2 * (d - 1 - i)] for i, b in enumerate(before))
        self.ntap, self.tap_k, self.tap_o = conv_taps(in_sp, out_sp, kernel, per_dim("stride", 1), before,
                                                      per_dim("dilation", 1))
        self.p_in, self.p_out, self.taps = math.prod(in_sp), math.prod(out_sp), kk

    def _dense_args(self) -> dict:
        """The dense convolution's arguments: a folded zero padding the same on both sides of every dimension
        goes into its ``padding`` (no padded copy of the input); an asymmetric one stays an ``F.pad``."""
        args = self.layer.conv_args
        if not self.conv or self.pad is None:
            return args
        d = len(self.out.spatial)
        pad = list(self.pad) + [0] * (2 * d - len(self.pad))
        sides = [(pad[2 * (d - 1 - i)], pad[2 * (d - 1 - i) + 1]) for i in range(d)]  # F.pad: last dim first
        if any(a != b for a, b in sides):
            return args
        own = args.get("padding", 0)
        own = tuple(own) if isinstance(own, (tuple, list)) else (own,) * d
        return {**args, "padding": tuple(p + a for p, (a, _) in zip(own, sides))}

    # --- running -----------------------------------------------------------------------------------------

    def run(self, fresh: bool) -> None:
        q = self.q
        nnz = q.nnz
        if nnz == 0 and not fresh:
            self.paths["idle"] += 1
        elif fresh or nnz > q.limit or self.policy == DENSE or (
                self.policy == AUTO and self.t_fixed + nnz * self.macs_per_event * self.t_mac > self.t_dense):
            self.paths["dense"] += 1
            start = time.perf_counter()
            self.dense()
            if not fresh:
                self.t_dense = _average(self.t_dense, time.perf_counter() - start)
                self.events += nnz
        else:
            self.paths["sparse"] += 1
            start = time.perf_counter()
            self.events_update()
            elapsed = time.perf_counter() - start - self.t_fixed
            self.t_mac = _average(self.t_mac, max(elapsed, 0.0) / (nnz * self.macs_per_event))
            self.events += nnz

    def events_update(self) -> None:
        """``u += W s / k`` from the quantizer's CSR list, on the touched output rows."""
        q, out = self.q, self.out
        st = out.storage
        if self.depthwise is not None:
            st.n = depthwise_events(q.pix, q.ptr, q.ch, q.val, q.n_pix, self.depthwise[0], self.ntap, self.tap_k,
                                       self.tap_o, self.p_in, self.p_out, st.rows, out.c0, st.mark, st.touched, st.n,
                                       self.depthwise[1])
        elif self.groups == 1:
            st.n = conv_events(q.pix, q.ptr, q.ch, q.val, q.n_pix, self.w_events, self.ntap, self.tap_k,
                                  self.tap_o, self.p_in, self.p_out, st.rows, out.c0, st.mark, st.touched, st.n)
        else:
            st.n = grouped_events(q.pix, q.ptr, q.ch, q.val, q.n_pix, self.w_events, self.cin_g, self.ntap,
                                     self.tap_k, self.tap_o, self.p_in, self.p_out, st.rows, out.c0, st.mark,
                                     st.touched, st.n)

    def dense(self) -> None:
        """``u = W (L / k) + b`` over the whole input, in torch, channels-last (oneDNN's fast layout); the result
        becomes the output's storage when the layer owns all of it (no copy), else it is copied into its
        channels."""
        q = self.q
        x = q.levels_logical()
        k = q.k_tensor  # (), per channel (C, 1, ...) or per feature (F,): broadcasts against x
        if q.flatten:
            x = x.flatten(1)
        if self.conv and k.dim() == 0:  # fold 1/k into the weights (cached until k changes)
            if q.version != self._dense_version:
                weight = self.weight / k
                if weight.dim() in _LAST:
                    weight = weight.contiguous(memory_format=_LAST[weight.dim()])
                self._dense_weight, self._dense_version = weight, q.version
            weight = self._dense_weight
        else:
            x, weight = x / k, self.weight
        if self.pad is not None and self.dense_args is self.layer.conv_args:
            x = F.pad(x, self.pad)  # asymmetric: a padded copy
        if self.conv:
            if x.dim() in _LAST:
                x = x.contiguous(memory_format=_LAST[x.dim()])  # the image input comes as planes (NCHW)
            y = _CONV[self.layer.kind](x, weight, self.bias, **self.dense_args)
        else:
            y = F.linear(x, weight, self.bias)
        out = self.out
        rows = y.movedim(1, -1) if y.dim() >= 3 else y  # (B, *S, C): the rows, if y is channels-last
        if self.owns_storage and rows.is_contiguous():
            out.storage.adopt(rows.reshape(out.storage.rows.shape))
        else:
            out.stored().copy_(y)
        out.storage.all = True

    # --- break-even --------------------------------------------------------------------------------------

    def calibrate(self) -> None:
        """First timings, when the plan is built, on scratch copies (the fastest of three runs each): the dense
        form, and the event kernel on one message (its fixed cost) and on synthetic messages (a few channels of
        2% of the input pixels, scattered: caches as cold as on real frames) for its cost per multiply-add. Real
        frames then refine both."""
        st, q = self.out.storage, self.q
        saved = st.rows, st.tensor, st.rows.copy(), st.n, st.all
        saved_q = q.n_pix, q.nnz, q.pix, q.ptr, q.ch, q.val, q.limit
        times = []
        for _ in range(4):  # the first call sets oneDNN up
            start = time.perf_counter()
            self.dense()
            times.append(time.perf_counter() - start)
        self.t_dense = min(times[1:])
        rng = np.random.default_rng(0)
        c = q.channels
        for probe, (n_pix, width) in enumerate(((1, 1), (max(1, q.rows // 50), min(c, 8)))):
            q.pix = np.sort(rng.choice(q.rows, n_pix, replace=False)).astype(np.int32)
            q.ptr = np.arange(n_pix + 1, dtype=np.int32) * width
            q.ch = np.concatenate([np.sort(rng.choice(c, width, replace=False)) for _ in range(n_pix)]).astype(np.int32)
            q.val = np.ones(n_pix * width, q.dtype)
            q.n_pix, q.nnz = n_pix, n_pix * width
            times = []
            for _ in range(4):  # the first call compiles or loads the kernel
                st.n = 0
                start = time.perf_counter()
                self.events_update()
                times.append(time.perf_counter() - start)
                clear_marks(st.mark, st.touched, st.n)
            if probe == 0:
                self.t_fixed = min(times[1:])
            else:
                self.t_mac = max(min(times[1:]) - self.t_fixed, 1e-9) / (q.nnz * self.macs_per_event)
        q.n_pix, q.nnz, q.pix, q.ptr, q.ch, q.val, q.limit = saved_q
        st.rows, st.tensor = saved[:2]
        st.rows[:], st.n, st.all = saved[2:]

    def break_even(self) -> float:
        """Messages per frame at which the event kernel is estimated to cost what the dense form costs."""
        return max(self.t_dense - self.t_fixed, 0.0) / (self.t_mac * self.macs_per_event)

    def plan_nbytes(self) -> int:
        extra = sum(a.nbytes for a in self.depthwise) if self.depthwise is not None else 0
        return self.w_events.nbytes + self.ntap.nbytes + self.tap_k.nbytes + self.tap_o.nbytes + extra
