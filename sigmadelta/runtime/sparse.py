"""Sparse execution of a Sigma-Delta network: the work of each frame follows its nonzero quantized deltas.

``net.set_backend("sparse")`` builds a :class:`SparseEngine`; in ``"sigma-delta"`` mode ``net(x)`` and
``net.run(clip)`` then run here instead of through the dense simulation (the reference, ``"dense"``).
Both compute the same network (module docstring of :mod:`sigmadelta.modules`):

.. math::

    r_t = \\mathrm{round}(k x_t), \\quad s_t = r_t - r_{t-1}, \\quad u_t = u_{t-1} + W s_t / k
    \\;\\; (u_0 = b)

The simulation applies ``W`` to all of ``s_t``, zeros included. Here only the nonzero entries of ``s_t`` do
work: a fully connected layer gathers the rows of ``Wᵀ`` of its active inputs (``embedding_bag``), and a
convolution multiplies the channel vectors of its active input pixels with its kernel and scatter-adds the
products into the output pixels they reach. Everything downstream (nonlinearities, padding, residual adds,
the next quantizer) then touches only the output rows that changed, the *dirty rows*.

Plan, then execute
------------------
On the first frame of a batch size the engine walks the converted ``torch.fx`` graph once and builds a
*plan*: one step per node, each holding what it needs every frame, namely persistent buffers for its value
(channels-last *rows*, see :mod:`sigmadelta.runtime._indexmaps`), transposed or reshaped weights, the index
maps of convolutions and padding, and its state. A frame is then ``for step in steps: step.run()``; steps
pass each other dirty-row sets, never rebuild anything.

Per layer and frame the engine falls back to the dense computation when too many inputs are active for
sparsity to pay (:data:`DENSE_ABOVE`, measured per layer kind with ``benchmarks/thresholds.py``). The dense
path recomputes the layer from the quantizer's integers, ``u_t = W r_t / k + b`` (the rounding network's
value, which the sigma-delta network equals), so it also resets any accumulated rounding error.
The first frame after :meth:`SparseEngine.reset` runs every step densely: it fills every buffer.

When most of a layer's input changes every frame (a panning camera), the engine should cost what the dense
network costs. Its dense regime therefore avoids passes over the activations: a layer that ran densely stops
measuring its input's activity (it re-measures after 1, 2, 4, then every 8 frames); the convolution reads the
integers ``r`` with ``1/k`` folded into its weights, runs channels-last, and its output tensor becomes the
value's buffer without a copy; ReLU/ReLU6 write straight into the interior of the constant padding that follows
them; residual adds write into their buffer.

Ops between linear layers
-------------------------
Elementwise and per-channel ops (ReLU, ReLU6, hardswish, BatchNorm, scalar arithmetic, ...), constant
padding and elementwise binary ops of two same-shaped values (residual adds) run on the dirty rows only.
Any other op (pooling, means, flatten, softmax, ...) is recomputed densely whenever an input changed, and
marks its whole output dirty. This is always correct; it costs time only where such an op sits on a large
tensor.

Numerics
--------
- float64 models: everything in float64; results equal the dense simulation to ~1e-15 over long streams
  (tests: ≤ 1e-9).
- float32 models: products ``W s`` in float32, as in the simulation (unless its ``set_delta_dtype`` asks for
  float64). Fully connected layers accumulate in float64; convolutions accumulate ``u`` in float32 between
  dense recomputes. Values agree
  with the simulation to float32 precision, but a value that lands within float32 rounding of a quantizer's
  half-integer threshold can round the other way: a ±1 in one integer, which later layers carry on. On small
  networks and short streams this is rare (tests: ``rtol=1e-4, atol=1e-5·max|out|``, identical argmax); on the
  wide MLP over 1,000 Temporal-MNIST frames the largest logit difference was 1.3e-3 of the logit scale with the
  argmax identical on every frame; on EfficientNet-Lite0 (50 quantizers) it is every frame, ~6% of the logit
  scale, the same size as the simulation's own float32 rounding-vs-sigma-delta difference (which would be
  exactly zero in exact arithmetic) and as the float32-vs-float64 difference of the simulation itself.

Scales are read every frame (cached until a scale changes). Changing scales in the middle of a stream without
``net.reset()`` is not the same network in the two backends: the simulation keeps the sum of past increments made
with the old scales, the sparse backend's dense recomputes (``W r_t / k``) use only the new ones. Reset after
:meth:`~sigmadelta.SigmaDeltaNet.set_scales`.

The engine keeps op counting working: with ``net.counting`` on, it fills each quantizer's ``record`` as the
dense path does and updates the net's op counter (a dense copy of every quantizer's input per frame; turn
counting off to time the engine). Gradients do not flow through the sparse backend.
"""

from __future__ import annotations

import copy
import math
import operator
import time
from collections import defaultdict

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..modules import Quantizer, SigmaDeltaLinear
from ._indexmaps import conv_targets, is_identity_conv, pad_rows

__all__ = ["SparseEngine", "engine_of", "DENSE_ABOVE", "SPARSE_OVERHEAD"]

ALL = "all"  # dirty marker: every row may have changed (``None``: nothing changed; else an int64 row index)

# Per layer kind: the fraction of the dense work above which a layer runs densely for the frame, and the fixed
# cost of its sparse path in multiply-adds of its dense path (a layer whose dense work is below that always runs
# densely). Measured with benchmarks/thresholds.py (1 thread, 2-core EPYC; a 56x56 feature map, all of the input
# re-quantized every frame, so the overheads include a full quantizer pass): crossovers at 1.0 (fully connected,
# whose dense product is memory-bound), 0.3 (1x1 and kxk), 0.1 (grouped); never for depthwise, whose dense
# convolution costs 9 multiply-adds per output while the scatter of the sparse path costs more than that.
DENSE_ABOVE = {"linear": 0.9, "pointwise": 0.3, "conv": 0.3, "depthwise": 0.0, "grouped": 0.1}
SPARSE_OVERHEAD = {"linear": 5e5, "pointwise": 4e6, "conv": 6e6, "depthwise": 3e6, "grouped": 4e6}

_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}
_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}  # memory formats that store (N, C, *S) as rows


# ---------------------------------------------------------------------------------------------------------
# values


class _Value:
    """One node's value: a persistent buffer that steps update in place, and this frame's dirty rows.

    Tensors of 3 or more dimensions ``[B, C, *S]`` are stored channels-last as rows ``[B·prod(S), C]``
    (:attr:`rows`), with :attr:`buf` the logical ``[B, C, *S]`` view of the same memory; a trailing *trash
    row* can be reserved for scatters that need a place to drop out-of-range taps. Smaller tensors are
    stored as they are; their dirty set is only ``None`` or ``ALL``. Non-tensor values (sizes, tuples)
    live in :attr:`obj`.
    """

    __slots__ = ("name", "is_tensor", "shape", "storage", "buf", "rows", "obj", "dirty", "channels", "nrows")

    def __init__(self, name: str, example, trash_row: bool = False, constant: bool = False):
        self.name = name
        self.dirty = None  # steps set it every frame; constants stay clean
        self.is_tensor = isinstance(example, torch.Tensor)
        self.obj = None if self.is_tensor else example
        self.storage = self.buf = self.rows = None
        self.channels = self.nrows = 0
        if not self.is_tensor:
            return
        self.shape = tuple(example.shape)
        if constant:  # a parameter or buffer of the graph (get_attr): used as it is, never written
            self.buf = example
        elif example.dim() >= 3:
            b, c, *spatial = self.shape
            self.channels, self.nrows = c, b * math.prod(spatial)
            self.storage = torch.zeros(self.nrows + int(trash_row), c, dtype=example.dtype)
            self.rows = self.storage[: self.nrows]  # (B·prod(S), C)
            self.buf = self.rows.view(b, *spatial, c).movedim(-1, 1)  # (B, C, *S), channels-last strides
        else:
            self.storage = self.buf = example.detach().clone()

    @property
    def value(self):
        return self.buf if self.is_tensor else self.obj

    @property
    def row_layout(self) -> bool:
        return self.rows is not None

    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size() if self.storage is not None else 0

    def adopt(self, y: torch.Tensor) -> None:
        """Take a freshly computed channels-last ``y`` as the whole value without copying it (dense paths).
        The next in-place row update first copies it back into :attr:`storage` (:meth:`own`)."""
        self.buf, self.rows = y, y.movedim(1, -1).reshape(self.nrows, y.shape[1])  # a view for channels-last y
        self.dirty = ALL

    def own(self) -> None:
        """Make :attr:`rows` and :attr:`buf` views of :attr:`storage` again before updating rows in place."""
        if self.rows.data_ptr() != self.storage.data_ptr():
            self.storage[: self.nrows].copy_(self.rows)
            self.rows = self.storage[: self.nrows]
            self.buf = self.rows.view(self.shape[0], *self.shape[2:], self.channels).movedim(-1, 1)


def _set_dense(out: _Value, result) -> None:
    """Store a whole new value (the dense paths)."""
    if out.is_tensor:
        out.buf.copy_(result)
    else:
        out.obj = result
    out.dirty = ALL


# ---------------------------------------------------------------------------------------------------------
# steps


class _Step:
    """One node of the plan. ``run(fresh)`` updates :attr:`out` for the current frame; ``fresh`` (the first
    frame after a reset) asks for a full dense update."""

    kind = "op"
    out: _Value | None = None

    def __init__(self, name: str):
        self.name = name
        self.paths = {"sparse": 0, "dense": 0, "idle": 0}  # layers: how many frames took each path
        self.active_rows = 0  # layers: active input rows summed over frames (activity = this / frames / rows)

    def run(self, fresh: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def state_nbytes(self) -> int:
        return 0

    def plan_nbytes(self) -> int:
        return 0


class _Input(_Step):
    kind = "input"

    def __init__(self, name: str, out: _Value):
        super().__init__(name)
        self.out = out
        self.frame: torch.Tensor | None = None

    def run(self, fresh: bool) -> None:
        self.out.buf.copy_(self.frame)
        self.out.dirty = ALL


class _Quantize(_Step):
    """The quantizer Δ∘Q of one layer input, on its changed rows only.

    .. math:: r_t = \\mathrm{round}(k x_t), \\qquad s_t = r_t - r_{t-1}

    ``r`` is rounded in the model's dtype, as in the simulation, so both see the same integers. For an input
    in row layout the message is the active rows ``act`` (rows with a nonzero ``s``) and their integers
    ``s_act [n_act, C]`` (:meth:`message`, computed only when a consumer takes its sparse path); for a small
    flat input (fully connected layers) it is the whole ``s``.

    When the whole input changed (``ALL``), ``r_t`` is rounded into a spare buffer that then swaps with
    ``r_{t-1}`` (no copy), and ``s_act`` is formed lazily from the two. If the consumer ran densely on the last
    frame, the activity is not measured (``n_act`` unknown, so the consumer stays dense) for 1, 2, 4, then
    :attr:`max_skip` frames between measurements: a layer in a busy region pays only ``round(k x)``.
    """

    kind = "quantize"
    max_skip = 8  # a busy layer measures its activity again after 1, 2, 4, then every 8 frames

    def __init__(self, name: str, quantizer: Quantizer, x: _Value):
        super().__init__(name)
        self.q, self.x = quantizer, x
        self.rowwise = x.row_layout
        self.r_last = torch.zeros_like(x.rows if self.rowwise else x.buf)  # (R, C) or the flat shape
        self.r_spare = torch.zeros_like(self.r_last) if self.rowwise else None  # r_{t-1} after a swap
        self.numel_rows = x.nrows if self.rowwise else self.r_last.numel()
        self.max_active = float("inf")  # the most active rows for which some consumer runs sparse
        self._version = -1
        self.counting = False
        self.records: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.reset()

    def _logical(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.x
        return rows.view(x.buf.shape[0], *x.shape[2:], x.channels).movedim(-1, 1) if self.rowwise else rows

    @property
    def r_logical(self) -> torch.Tensor:
        """``r_t`` as the input's logical ``[B, C, *S]`` (a view)."""
        return self._logical(self.r_last)

    def reset(self) -> None:
        self.r_last.zero_()
        self.n_act = 0
        self.act = self.s_act = self.s_full = None
        self.known = True  # whether n_act / act are measured this frame
        self.busy = False  # the last measured frame was too active for any consumer's sparse path
        self.skip = self.countdown = 0  # frames left before the activity of a busy layer is measured again
        self.records.clear()

    def _scales(self) -> None:
        """Cache ``k`` (in the model's dtype, as the simulation computes it) until the scale changes."""
        version = self.q.log_scale._version
        if version == self._version:
            return
        self._version = version
        with torch.no_grad():
            k = self.q.scale.to(self.r_last.dtype)
        self.k = k  # () or the per-channel shape, broadcasting over the logical value
        self.k_rows = k.reshape(-1) if (self.rowwise and k.dim() > 0) else k  # broadcasting over rows (n, C)
        self.k_scalar = float(k) if k.dim() == 0 else None

    def message(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(act, s_act)``: the active rows and their integers ``[n_act, C]``."""
        if self.s_act is None:  # after a swap: r_spare holds r_{t-1}
            self.s_act = self.r_last.index_select(0, self.act) - self.r_spare.index_select(0, self.act)
        return self.act, self.s_act

    def run(self, fresh: bool) -> None:
        self._scales()
        x, dirty = self.x, self.x.dirty
        self.known = True
        if self.counting:
            r_before = self.r_logical.clone()
        if dirty is None and not fresh:
            self.n_act = 0
        elif not self.rowwise and self.max_active < 0:  # every consumer runs densely: only "changed or not?"
            r = torch.round(x.buf * self.k)
            self.n_act = 0 if torch.equal(r, self.r_last) else self.numel_rows
            self.r_last.copy_(r)
        elif not self.rowwise:
            r = torch.round(x.buf * self.k)
            self.s_full = s = r - self.r_last  # (B, F): integers
            self.r_last.copy_(r)
            self.act = s.view(-1).nonzero().squeeze(1)  # (nnz,) flat indices, sorted by stream
            self.n_act = self.act.numel()
        elif fresh or dirty is ALL:
            r = self.r_spare
            torch.mul(x.rows, self.k_rows, out=r)  # (R, C)
            r.round_()
            if not fresh and self.busy and self.countdown > 0:
                self.countdown -= 1
                self.known, self.n_act, self.act = False, self.numel_rows, None  # consumers stay dense
            else:
                # rows with a nonzero integer; float |Δ| sums vectorise far better than bool ne().any() here
                self.act = torch.sub(r, self.r_last).abs_().sum(1).nonzero().squeeze(1)  # (n_act,)
                self.n_act = self.act.numel()
                busy = 0 < self.n_act > self.max_active and not fresh  # a stream's start says nothing
                self.skip = min(2 * self.skip, self.max_skip) if (busy and self.busy) else 1
                self.busy, self.countdown = busy, self.skip
            self.r_last, self.r_spare = r, self.r_last
            self.s_act = None  # formed on demand by message()
        else:
            r = torch.round(x.rows.index_select(0, dirty) * self.k_rows)  # (n_dirty, C)
            s = r - self.r_last.index_select(0, dirty)
            self.r_last.index_copy_(0, dirty, r)
            active = s.abs().sum(1).nonzero().squeeze(1)  # positions in dirty of the active rows
            self.act = dirty.index_select(0, active)
            self.s_act = s.index_select(0, active)
            self.n_act = self.act.numel()
            self.busy = 0 < self.n_act > self.max_active
        if self.counting:
            self.records["x"].append(x.buf.clone())
            self.records["r"].append(self.r_logical.clone())
            self.records["s"].append(self.r_logical - r_before)

    def state_nbytes(self) -> int:
        n = self.r_last.numel() * self.r_last.element_size()
        return n * 2 if self.r_spare is not None else n


class _Linear(_Step):
    """A fully connected layer on the nonzero integers of its input.

    .. math:: a_t = a_{t-1} + \\frac{1}{k} \\sum_{i: s_{t,i} \\ne 0} s_{t,i} W_{:,i}, \\qquad u_t = a_t + b

    ``Wᵀ`` is stored contiguous so that the column of input ``i`` is one contiguous row, and
    ``F.embedding_bag`` sums the active rows weighted by their integers without materialising them. ``a`` is
    kept in float64. Above :data:`DENSE_ABOVE` ``["linear"]`` active inputs, ``a_t = W r_t / k``.
    """

    kind = "linear"

    def __init__(self, name: str, layer: SigmaDeltaLinear, q: _Quantize, out: _Value):
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


class _Conv(_Step):
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

    def __init__(self, name: str, layer: SigmaDeltaLinear, q: _Quantize, out: _Value):
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
            if self._k_version != q._version:
                self._k_version, self.weight_over_k = q._version, self.weight / q.k
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


class _Rowwise(_Step):
    """An op that acts on each row on its own (elementwise, or per channel): ``y[D] = f(x[D])``."""

    kind = "rowwise"

    def __init__(self, name: str, fn, x: _Value, out: _Value, out_fn=None):
        super().__init__(name)
        self.fn, self.x, self.out = fn, x, out
        self.out_fn = out_fn  # fn(x, out=...) writing straight into the buffer, for the dense path
        self.dense_into = None  # set when the only consumer is a constant pad: write into its interior instead
        self.row_view = (-1, x.channels) + (1,) * (len(x.shape) - 2) if x.row_layout else None

    def run(self, fresh: bool) -> None:
        dirty = self.x.dirty
        if dirty is None and not fresh:
            self.out.dirty = None
        elif fresh or dirty is ALL:
            if self.out_fn is not None:
                # fused with a following pad, our own buffer goes stale: only that pad reads it, row by row,
                # and only rows this step wrote on a sparse frame
                self.out_fn(self.x.buf, self.out.buf if self.dense_into is None else self.dense_into)
                self.out.dirty = ALL
            else:
                _set_dense(self.out, self.fn(self.x.buf))
        else:
            y = self.fn(self.x.rows.index_select(0, dirty).view(self.row_view))  # (n, C, 1, ...)
            self.out.own()
            self.out.rows.index_copy_(0, dirty, y.view(dirty.numel(), -1))
            self.out.dirty = dirty


class _Binary(_Step):
    """An elementwise op of two same-shaped values (a residual add): ``y[D] = f(a[D], b[D])``, ``D = D_a ∪ D_b``."""

    kind = "binary"

    def __init__(self, name: str, fn, a: _Value, b: _Value, out: _Value, fn_out=None):
        super().__init__(name)
        self.fn, self.a, self.b, self.out = fn, a, b, out
        self.fn_out = fn_out if out.is_tensor and out.storage is not None else None  # fn(a, b, out=...)
        self.mask = torch.zeros(out.nrows, dtype=torch.bool) if out.row_layout else None

    def run(self, fresh: bool) -> None:
        da, db = self.a.dirty, self.b.dirty
        if da is None and db is None and not fresh:
            self.out.dirty = None
            return
        if fresh or da is ALL or db is ALL or self.mask is None:
            if self.fn_out is not None:
                self.fn_out(self.a.buf, self.b.buf, out=self.out.buf)
                self.out.dirty = ALL
            else:
                _set_dense(self.out, self.fn(self.a.buf, self.b.buf))
            return
        if da is None or db is None:
            dirty = db if da is None else da
        else:
            self.mask.index_fill_(0, da, True).index_fill_(0, db, True)
            dirty = self.mask.nonzero().squeeze(1)
            self.mask.zero_()
        y = self.fn(self.a.rows.index_select(0, dirty), self.b.rows.index_select(0, dirty))
        self.out.own()
        self.out.rows.index_copy_(0, dirty, y)
        self.out.dirty = dirty


class _Pad(_Step):
    """Constant padding of the spatial dimensions: row ``i`` of the input lands on row ``map[i]`` of the output.

    The border is filled once (at reset) and never written again.
    """

    kind = "pad"

    def __init__(self, name: str, x: _Value, out: _Value, pads_before, interior, value: float):
        super().__init__(name)
        self.x, self.out, self.value, self.interior = x, out, value, interior
        self.map = pad_rows(x.shape[2:], pads_before, out.shape[2:], x.shape[0])  # (R_in,)
        self.fused = False
        self.reset()

    def reset(self) -> None:
        self.out.storage.fill_(self.value)

    def run(self, fresh: bool) -> None:
        dirty = self.x.dirty
        if dirty is None and not fresh:
            self.out.dirty = None
        elif fresh or dirty is ALL:
            if not self.fused:  # else the producer already wrote the interior
                self.out.buf[self.interior].copy_(self.x.buf)
            self.out.dirty = ALL
        else:
            rows = self.map.index_select(0, dirty)
            self.out.rows.index_copy_(0, rows, self.x.rows.index_select(0, dirty))
            self.out.dirty = rows

    def plan_nbytes(self) -> int:
        return self.map.numel() * self.map.element_size()


class _Generic(_Step):
    """Any other per-sample op, recomputed densely when one of its inputs changed."""

    kind = "dense-op"

    def __init__(self, name: str, call, inputs: list[_Value], out: _Value):
        super().__init__(name)
        self.call, self.inputs, self.out = call, inputs, out

    def run(self, fresh: bool) -> None:
        if fresh or any(v.dirty is not None for v in self.inputs):
            _set_dense(self.out, self.call())
        else:
            self.out.dirty = None


# ---------------------------------------------------------------------------------------------------------
# which ops run row by row

_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Identity,
)
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.elu,
    F.selu, F.celu, F.softplus, F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, torch.abs, torch.exp,
    torch.neg, torch.clamp, torch.clip, operator.neg,
}
_ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "abs", "exp", "neg", "clamp", "clamp_min", "clamp_max",
                        "contiguous"}
_BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                     torch.div, torch.maximum, torch.minimum}
_BINARY_METHODS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}
_PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)


_OUT_BINARY = {operator.add: torch.add, torch.add: torch.add, operator.sub: torch.sub, torch.sub: torch.sub,
               operator.mul: torch.mul, torch.mul: torch.mul}


def _out_fn(node: fx.Node, mod, kwargs: dict):
    """``f(x, out)`` writing into ``out`` for the commonest activations, so their dense path allocates nothing."""
    plain_call = node.op == "call_function" and len(node.args) == 1
    relu = (mod is not None and type(mod) is nn.ReLU) or (plain_call and node.target in (F.relu, torch.relu))
    relu6 = (mod is not None and type(mod) is nn.ReLU6) or (plain_call and node.target is F.relu6)
    if relu:
        return lambda x, out: torch.clamp_min(x, 0, out=out)
    if relu6:
        return lambda x, out: torch.clamp(x, 0, 6, out=out)
    return None


def _not_inplace(module: nn.Module) -> nn.Module:
    """A shallow copy with ``inplace=False``: in-place ops would overwrite a persistent buffer (a state)."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module


def _is_tensor_node(a, values: dict) -> bool:
    return isinstance(a, fx.Node) and values[a].is_tensor


# ---------------------------------------------------------------------------------------------------------
# the engine


def engine_of(net) -> "SparseEngine":
    """The sparse engine of ``net`` (building it with ``net.set_backend("sparse")`` if needed), for its tuning
    and diagnostics: :meth:`SparseEngine.set_dense_above`, :meth:`~SparseEngine.paths`,
    :meth:`~SparseEngine.activity`, :meth:`~SparseEngine.memory`, :attr:`~SparseEngine.profile`."""
    if net.engine is None:
        net.set_backend("sparse")
    return net.engine


class SparseEngine:
    """Runs a :class:`~sigmadelta.SigmaDeltaNet` in sigma-delta mode so that work follows nonzero deltas.

    Built by ``net.set_backend("sparse")``; the net calls :meth:`run` and :meth:`reset`. The plan is built
    on the first frame (and again for a new batch size). Results equal the dense simulation (module
    docstring: numerics).

    Attributes:
        profile: when true, :attr:`timings` collects seconds per step name over the frames run.
        timings: step name -> list of seconds, one per frame run with ``profile`` on.
    """

    def __init__(self, net):
        self.net = net
        self.gm: fx.GraphModule = net.graph_module
        self.steps: list[_Step] = []
        self._quantizers: list[_Quantize] = []
        self.batch_size: int | None = None
        self.profile = False
        self.timings: dict[str, list[float]] = defaultdict(list)
        self._fresh = True
        self.dense_above = dict(DENSE_ABOVE)  # per layer kind; see set_dense_above

    def set_dense_above(self, **fractions: float) -> None:
        """Override, per layer kind, the fraction of the dense work above which a layer runs densely, e.g.
        ``linear=1.0`` (1 or more: sparse whenever possible, only a stream's first frame is dense) or
        ``conv=0.0`` (always dense). Kinds: those of :data:`DENSE_ABOVE`."""
        unknown = set(fractions) - set(DENSE_ABOVE)
        if unknown:
            raise ValueError(f"unknown layer kinds {sorted(unknown)}; choose from {sorted(DENSE_ABOVE)}")
        self.dense_above.update(fractions)
        self._apply_thresholds()

    def _apply_thresholds(self) -> None:
        """Per layer, the most active input rows for which the sparse path runs:

        ``n_act · w + overhead < fraction · dense``, with ``w`` the multiply-adds per active input row,
        ``dense`` those of the dense layer, and the fixed overhead of the sparse path in multiply-add units
        (:data:`SPARSE_OVERHEAD`), so that small layers, where that fixed cost dominates, run densely."""
        for step in self.steps:
            if isinstance(step, (_Linear, _Conv)):
                kind = "linear" if isinstance(step, _Linear) else step.variant
                fraction = self.dense_above[kind]
                if fraction >= 1.0:  # sparse whenever possible
                    step.max_active = float("inf")
                else:
                    step.max_active = (fraction * step.dense_work - SPARSE_OVERHEAD[kind]) / step.work_per_active
        for q in self._quantizers:
            q.max_active = max((s.max_active for s in self.steps if isinstance(s, (_Linear, _Conv)) and s.q is q),
                               default=float("inf"))
            q.busy, q.countdown = False, 0  # measure again on the next frame

    # --- state -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start new streams: zero every state; the next frame runs densely and refills every buffer."""
        for step in self.steps:
            step.reset()
        self._fresh = True
        self.timings.clear()
        for step in self.steps:
            step.paths = dict.fromkeys(step.paths, 0)
            step.active_rows = 0

    def paths(self) -> dict[str, dict[str, int]]:
        """Layer name -> frames since the last reset that ran ``"sparse"``, ``"dense"``, or ``"idle"`` (no
        active input)."""
        return {s.name: dict(s.paths) for s in self.steps if isinstance(s, (_Linear, _Conv))}

    def activity(self) -> dict[str, float]:
        """Layer name -> mean fraction of its input rows (pixels; inputs of fully connected layers) that were
        active (held a nonzero integer) per frame since the last reset: the work the sparse path does."""
        return {s.name: s.active_rows / max(sum(s.paths.values()), 1) / max(s.q.numel_rows, 1)
                for s in self.steps if isinstance(s, (_Linear, _Conv))}

    def memory(self) -> dict:
        """Bytes held by the engine: ``state`` (integers ``r``, accumulators, the value buffers the frame
        updates in place), ``plan`` (transposed weights, index maps) and, for scale, ``weights`` (the
        network's weights in the model's dtype)."""
        values = {id(s.out): s.out for s in self.steps if s.out is not None}
        state = sum(s.state_nbytes() for s in self.steps if isinstance(s, (_Quantize, _Linear)))
        state += sum(v.nbytes() for v in values.values())
        plan = sum(s.plan_nbytes() for s in self.steps)
        weights = sum(layer.weight.numel() * layer.weight.element_size() for layer in self.net.layers.values())
        return {"state_bytes": state, "plan_bytes": plan, "weight_bytes": weights}

    # --- running -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, clip: torch.Tensor) -> torch.Tensor:
        """Run ``clip`` ``[T, B, ...]`` frame by frame; returns ``[T, B, ...]``."""
        steps, batch = clip.shape[:2]
        if self.batch_size != batch:
            with torch.inference_mode(False):  # plain tensors: the state must stay writable outside inference mode
                self._build(batch)
        counting = bool(getattr(self.net, "counting", False))
        for q in self._quantizers:
            q.counting = counting
            q.records.clear()
        out = None
        for t in range(steps):
            self._input.frame = clip[t]
            self._frame()
            y = self._output.value
            if out is None:
                out = torch.empty((steps, *y.shape), dtype=y.dtype)
            out[t].copy_(y)
        if counting:
            self._publish_records()
        return out

    def _frame(self) -> None:
        fresh, self._fresh = self._fresh, False
        if not self.profile:
            for step in self.steps:
                step.run(fresh)
            return
        timings = self.timings
        for step in self.steps:
            start = time.perf_counter()
            step.run(fresh)
            timings[step.name].append(time.perf_counter() - start)

    def _publish_records(self) -> None:
        """Put the frames' records in each quantizer's ``record``, as the dense path leaves them, for the net's
        op counter."""
        for q in self._quantizers:
            q.q.record = {key: torch.cat(chunks) for key, chunks in q.records.items()}
            q.records.clear()

    # --- planning ----------------------------------------------------------------------------------------

    def _build(self, batch: int) -> None:
        """Walk the graph once and build one step per node (the plan) for ``batch`` streams."""
        gm, net = self.gm, self.net
        modules = dict(gm.named_modules())
        example = torch.zeros((batch, *net.sample_shape), dtype=net.dtype)
        examples = _shapes(gm, modules, example)
        consumers = {node: list(node.users) for node in gm.graph.nodes}

        values: dict[fx.Node, _Value] = {}
        quantize: dict[fx.Node, _Quantize] = {}
        step_of: dict[fx.Node, _Step] = {}
        steps: list[_Step] = []
        self._quantizers: list[_Quantize] = []
        for node in gm.graph.nodes:
            mod = modules.get(node.target) if node.op == "call_module" else None
            if node.op == "output":
                self._output = values[node.args[0]]
                continue
            if isinstance(mod, Quantizer):
                step = _Quantize(node.name, mod, values[node.args[0]])
                quantize[node] = step
                self._quantizers.append(step)
                steps.append(step)
                continue
            trash = isinstance(mod, SigmaDeltaLinear) and mod.kind != "linear"
            out = values[node] = _Value(node.name, examples[node], trash_row=trash, constant=node.op == "get_attr")
            if node.op == "placeholder":
                step = self._input = _Input(node.name, out)
            elif node.op == "get_attr":
                continue  # a constant: its value never changes
            elif isinstance(mod, SigmaDeltaLinear):
                q = quantize[node.args[0]]
                step = (_Linear if mod.kind == "linear" else _Conv)(mod.name, mod, q, out)
            else:
                step = _plan_op(node, mod, values, out, consumers)
            steps.append(step)
            step_of[node] = step
        for node, step in step_of.items():  # fuse activation -> constant pad on the dense path
            if isinstance(step, _Pad):
                producer = step_of.get(node.args[0])
                if isinstance(producer, _Rowwise) and producer.out_fn is not None and len(consumers[node.args[0]]) == 1:
                    producer.dense_into, step.fused = step.out.buf[step.interior], True
        self.steps = steps
        self.batch_size = batch
        self._fresh = True
        self._apply_thresholds()


def _resolve(arg, values: dict):
    """Replace graph nodes in ``arg`` (nested tuples, lists, dicts) by their current values."""
    return fx.node.map_arg(arg, lambda n: values[n].value)


def _plan_op(node: fx.Node, mod, values: dict, out: _Value, consumers) -> _Step:
    """The step for one non-linear node: row by row where the op allows it, else a dense recompute."""
    args, kwargs = node.args, dict(node.kwargs)
    tensor_args = [a for a in args if _is_tensor_node(a, values)]
    x = values[args[0]] if args and _is_tensor_node(args[0], values) else None
    others_constant = not any(isinstance(a, fx.Node) for a in list(args[1:]) + list(kwargs.values()))
    same_shape = x is not None and out.is_tensor and x.shape == out.shape

    if same_shape and others_constant and x.row_layout == out.row_layout:
        fn = None
        if mod is not None and isinstance(mod, _ELEMENTWISE_MODULES + _DROPOUT_MODULES) and not mod.training:
            fn = _not_inplace(mod)
        elif mod is not None and isinstance(mod, nn.modules.batchnorm._BatchNorm) and not mod.training \
                and mod.track_running_stats:
            fn = mod
        elif mod is not None and isinstance(mod, nn.PReLU):
            fn = mod
        elif node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS:
            if "inplace" in kwargs:
                kwargs["inplace"] = False
            rest, target = args[1:], node.target
            fn = lambda t, target=target, rest=rest, kw=kwargs: target(t, *rest, **kw)  # noqa: E731
        elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
            rest, name = args[1:], node.target
            fn = lambda t, name=name, rest=rest, kw=kwargs: getattr(t, name)(*rest, **kw)  # noqa: E731
        elif (node.op == "call_function" and node.target in _BINARY_FUNCTIONS) or \
                (node.op == "call_method" and node.target in _BINARY_METHODS):
            target = node.target if node.op == "call_function" else _BINARY_METHODS[node.target]
            if len(args) == 2 and not isinstance(args[1], (fx.Node, torch.Tensor)):
                c = args[1]
                fn = lambda t, target=target, c=c, kw=kwargs: target(t, c, **kw)  # noqa: E731
        if fn is not None:
            return _Rowwise(node.name, fn, x, out, _out_fn(node, mod, kwargs))

    # scalar ∘ x (e.g. 1 - x)
    if (node.op == "call_function" and node.target in _BINARY_FUNCTIONS and len(args) == 2 and not kwargs
            and not isinstance(args[0], fx.Node) and _is_tensor_node(args[1], values)):
        y = values[args[1]]
        if out.is_tensor and y.shape == out.shape and y.row_layout == out.row_layout \
                and not isinstance(args[0], torch.Tensor):
            c, target = args[0], node.target
            return _Rowwise(node.name, lambda t, c=c, target=target: target(c, t), y, out)

    # residual add and friends: two same-shaped values
    binary = ((node.op == "call_function" and node.target in _BINARY_FUNCTIONS)
              or (node.op == "call_method" and node.target in _BINARY_METHODS))
    if binary and len(args) == 2 and len(tensor_args) == 2 and out.is_tensor:
        a, b = values[args[0]], values[args[1]]
        if a.shape == b.shape == out.shape:
            target = node.target if node.op == "call_function" else _BINARY_METHODS[node.target]
            fn_out = _OUT_BINARY.get(target) if not kwargs else None
            return _Binary(node.name, lambda u, v, target=target, kw=kwargs: target(u, v, **kw), a, b, out, fn_out)

    pad = _constant_pad(node, mod, x, out)
    if pad is not None:
        return _Pad(node.name, x, out, *pad)

    # anything else: recompute densely when an input changed
    call = _dense_call(node, mod, values)
    inputs = [values[n] for n in node.all_input_nodes if n in values]
    return _Generic(node.name, call, inputs, out)


def _constant_pad(node: fx.Node, mod, x: _Value | None, out: _Value):
    """``(pads_before, interior, value)`` if ``node`` pads only spatial dims with a constant, else ``None``."""
    if x is None or not x.row_layout or not out.is_tensor or out.rows is None:
        return None
    if mod is not None and isinstance(mod, _PAD_MODULES):
        pad, value = mod.padding, float(getattr(mod, "value", 0.0))
    elif node.op == "call_function" and node.target is F.pad:
        names = ("input", "pad", "mode", "value")
        kw = {**dict(zip(names, node.args)), **node.kwargs}
        if kw.get("mode", "constant") != "constant" or isinstance(kw.get("value"), fx.Node):
            return None
        pad, value = kw["pad"], float(kw.get("value") or 0.0)
    else:
        return None
    nsp = len(x.shape) - 2
    pad = tuple(pad)
    if len(pad) > 2 * nsp or any(p < 0 for p in pad):
        return None
    pad = pad + (0,) * (2 * nsp - len(pad))
    before = [pad[2 * (nsp - 1 - i)] for i in range(nsp)]  # F.pad lists the last dim first
    interior = (slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(before, x.shape[2:]))
    return before, interior, value


def _dense_call(node: fx.Node, mod, values: dict):
    """A closure that runs ``node`` on the current values."""
    args, kwargs = node.args, node.kwargs
    if node.op == "call_module":
        fn = _not_inplace(mod)
        return lambda: fn(*_resolve(args, values), **_resolve(kwargs, values))
    if node.op == "call_method":
        name = node.target
        return lambda: getattr(_resolve(args[0], values), name)(*_resolve(args[1:], values),
                                                                **_resolve(kwargs, values))
    target = node.target
    return lambda: target(*_resolve(args, values), **_resolve(kwargs, values))


def _shapes(gm: fx.GraphModule, modules: dict, example: torch.Tensor) -> dict:
    """Every node's value on ``example`` with the quantizers as identities and the layers as plain linear
    ops (no state is touched): it fixes buffer shapes and types."""
    env: dict[fx.Node, object] = {}
    for node in gm.graph.nodes:
        args = fx.node.map_arg(node.args, lambda n: env[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
        if node.op == "placeholder":
            env[node] = example
        elif node.op == "get_attr":
            obj = gm
            for part in node.target.split("."):
                obj = getattr(obj, part)
            env[node] = obj
        elif node.op == "call_module":
            mod = modules[node.target]
            if isinstance(mod, Quantizer):
                env[node] = args[0]
            elif isinstance(mod, SigmaDeltaLinear):
                env[node] = mod.linear(args[0], mod.weight, mod.bias)
            else:
                env[node] = _not_inplace(mod)(*args, **kwargs)
        elif node.op == "call_method":
            env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
        elif node.op == "call_function":
            env[node] = node.target(*args, **kwargs)
        # output: nothing to compute
    return env
