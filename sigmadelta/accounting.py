"""Operation and energy accounting (paper-notes, section 5).

Per linear layer and per time step, from what its quantizer sent (:attr:`Quantizer.observation`):

==================  ===================================================================================
kind                ops
==================  ===================================================================================
dense               the original network: fully connected n_in·n_out multiplies + (n_in − 1)·n_out adds
                    per row; convolutions 2 ops per multiply-accumulate (zero padding included)
sparse              the original network skipping zero inputs: n_in → nnz(x) per row (FC);
                    2·Σ_{x_i ≠ 0} fanout_i (conv). Counted in the original and temporal-difference modes,
                    whose activations are the original's
rounding            Σ_i |s_i| · fanout_i with s = round(k x): additions only
rounding_muladd     2 · Σ_{s_i ≠ 0} fanout_i: one multiply-add per nonzero input and connection
sigma_delta         Σ_i |s_i| · fanout_i with s = Q(Δ(k x)): additions only
sigma_delta_muladd  2 · Σ_{s_i ≠ 0} fanout_i for the sigma-delta integers
sigma_delta_hybrid  min(sigma_delta, dense) per layer and step: each layer, each frame, does whichever is
                    cheaper, the additions of its sigma-delta integers or the dense layer on the rounded
                    input (W·round(k x)/k, which is also the sigma-delta state: outputs stay the same). The
                    choice can be made before computing, from the integers. The sparse engine's fallback.
==================  ===================================================================================

``fanout_i`` is exact: the number of outputs input unit ``i`` reaches, fewer at a convolution's borders, with
stride, dilation and groups honoured. It is computed once per layer (a plan) as the gradient of the sum of the
layer's outputs with all-ones weights and input: ∂/∂x_i Σ_o Σ_j 1·x_j = #{(o, j): j = i}.

Biases, nonlinearities, pooling and state updates are not counted, as in the paper.

Two conventions, named plainly everywhere results are shown: **additions** (the paper's: a message ``n``
costs ``|n|`` additions per connection; the ``sigma_delta`` kind) and **events** (the peers' and the dense
original's: each nonzero message costs one multiply-accumulate per connection, 2 ops; the ``sigma_delta_muladd``
kind, :data:`EVENTS`). Both are counted for every delta scheme (:mod:`sigmadelta.core.functional`): ``s`` is the
scheme's message ``L_t − L_{t−1}``. The threshold scheme's messages are real numbers, which additions cannot
apply: its ``sigma_delta`` kind counts them as events too (2 ops per nonzero message and connection, priced as
multiply-adds), so both conventions give the same number for it.

Storage: :class:`OpCounter` keeps running totals per layer and kind, so counting takes the same memory after
a million steps as after one. Per-step counts are kept only when asked for (:attr:`OpCounter.per_step`, set
through ``SigmaDeltaNet.per_step_counts``): ``"total"`` keeps each kind per step summed over layers (a few
numbers a step), ``"layer"`` per layer and step (8 bytes per layer, kind and step).

Adding a kind: give it a row in :data:`KINDS`, and produce its per-step counts either from a record key
(:data:`INTEGER_RECORDS`) or from the layer's other kinds (a function in :data:`DERIVED`); storage, totals,
per-step records and :class:`OpCounts` handle any kind.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .core.modules import Quantizer, SigmaDeltaLinear

__all__ = ["KINDS", "HYBRID", "ADDITIONS", "EVENTS", "CONVENTIONS", "HYBRID_ADDITIONS", "HYBRID_DENSE", "ENERGY_PJ", "PER_STEP", "INTEGER_RECORDS",
           "DERIVED", "OpCounts", "OpCounter", "fanout_map", "energy_per_op_pj", "hybrid_energy_pj"]

HYBRID = "sigma_delta_hybrid"
ADDITIONS, EVENTS = "sigma_delta", "sigma_delta_muladd"  # the two conventions for a delta network's ops
CONVENTIONS = {"additions": ADDITIONS, "events": EVENTS}  # convention name -> the op kind that counts it
KINDS = ("dense", "sparse", "rounding", "rounding_muladd", "sigma_delta", "sigma_delta_muladd", HYBRID)
ADD_ONLY = ("rounding", "sigma_delta")
# kinds counted from the integers a quantizer records: record key -> (additions kind, multiply-add kind)
INTEGER_RECORDS = {"r": ("rounding", "rounding_muladd"), "s": ("sigma_delta", "sigma_delta_muladd")}
# the hybrid's ops split by the path each layer and step took: running totals that give its energy at any precision
HYBRID_ADDITIONS, HYBRID_DENSE = f"{HYBRID}:additions", f"{HYBRID}:dense"
# what the counter keeps per step besides the running totals (see OpCounter.per_step)
PER_STEP = (None, "total", "layer")

# Horowitz (2014), 45 nm, pJ per operation
ENERGY_PJ = {
    "int8": {"add": 0.03, "mult": 0.2},
    "int32": {"add": 0.1, "mult": 3.1},
    "fp16": {"add": 0.4, "mult": 1.1},
    "fp32": {"add": 0.9, "mult": 3.7},
}


def energy_per_op_pj(kind: str, precision: str = "int32") -> float:
    """Energy of one counted op: an add for the discretized networks' additions; otherwise half the counted
    ops are multiplies and half adds (the original network, and the multiply-add variants)."""
    if precision not in ENERGY_PJ:
        raise ValueError(f"unknown precision {precision!r}; choose from {sorted(ENERGY_PJ)}")
    if kind not in KINDS:
        raise ValueError(f"unknown op kind {kind!r}; choose from {KINDS}")
    if kind == HYBRID:
        raise ValueError(f"{HYBRID!r} mixes additions and multiply-adds: use hybrid_energy_pj or "
                         "OpCounts.energy_nj")
    table = ENERGY_PJ[precision]
    return table["add"] if kind in ADD_ONLY else (table["add"] + table["mult"]) / 2


def hybrid_energy_pj(sigma_delta: np.ndarray, dense: np.ndarray, precision: str = "int32") -> np.ndarray:
    """Energy of :data:`HYBRID` for one layer, elementwise over steps: additions where the sigma-delta path is
    taken (``sigma_delta <= dense``), the original's multiply-add mix where the dense path is."""
    add, mixed = energy_per_op_pj("sigma_delta", precision), energy_per_op_pj("dense", precision)
    return np.where(sigma_delta <= dense, sigma_delta * add, dense * mixed)


def fanout_map(layer: SigmaDeltaLinear, sample_shape: tuple[int, ...]) -> torch.Tensor:
    """Exact fan-out of every input unit of ``layer`` for one sample, shape ``sample_shape``, float64.

    A fully connected layer's input reaches its ``n_out`` outputs. A convolution's input channel feeds ``C_out /
    groups`` output channels, at every output position its kernel reaches from there: that count per position is
    the gradient of the sum of a one-channel convolution of ones with the layer's kernel size, stride, padding and
    dilation (fewer at the borders). Computed once per layer shape and kept.
    """
    args = tuple(sorted((k, v if not isinstance(v, list) else tuple(v)) for k, v in layer.conv_args.items()))
    return _fanout(layer.kind, tuple(layer.weight.shape), args, tuple(sample_shape)).clone()


@lru_cache(maxsize=256)
def _fanout(kind: str, weight_shape: tuple[int, ...], conv_args: tuple, sample_shape: tuple[int, ...]) -> torch.Tensor:
    if kind == "linear":
        return torch.full(sample_shape, float(weight_shape[0]), dtype=torch.float64)
    c_out, _, *kernel = weight_shape
    args = dict(conv_args)
    groups = args.pop("groups", 1)
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(kernel)]
    # autograd even when the caller runs under torch.inference_mode() or no_grad: the plan is built once
    with torch.inference_mode(False), torch.enable_grad():
        ones = torch.ones((1, 1, *sample_shape[1:]), dtype=torch.float64, requires_grad=True)
        out = conv(ones, torch.ones((1, 1, *kernel), dtype=torch.float64), **args)
        (reached,) = torch.autograd.grad(out.sum(), ones)  # (1, 1, *spatial): output positions per input position
    return (reached[0] * (c_out // groups)).expand(sample_shape).contiguous()


@dataclass
class _Plan:
    """What the counter needs of one layer, built once from its input shape."""

    fanout: torch.Tensor  # (sample...) float64
    dense: float  # ops of one sample through the dense original layer
    n_out: int  # FC only: outputs per row
    is_linear: bool
    _flat: dict = field(default_factory=dict)  # (dtype, device) -> fanout flattened to (N,)

    def weighted(self, v: torch.Tensor, steps: int) -> torch.Tensor:
        """Σ over streams and units of ``v · fanout``, per step: ``v`` is ``[T·B, sample...]``; returns ``[T]``
        float64 on the CPU. One matrix-vector product on ``v``'s device, in float64 for float64 records and float32
        otherwise: exact while each frame's sum stays below 2**24 in float32, within ~1e-7 relative beyond."""
        dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
        fanout = self._flat.get((dtype, v.device))
        if fanout is None:
            fanout = self._flat[dtype, v.device] = self.fanout.reshape(-1).to(v.device, dtype)
        per_frame = torch.mv(v.reshape(-1, fanout.numel()).to(dtype), fanout)  # (T·B,)
        return per_frame.to("cpu", torch.float64).reshape(steps, -1).sum(1)


def _plan(layer: SigmaDeltaLinear, sample_shape: tuple[int, ...]) -> _Plan:
    fanout = fanout_map(layer, sample_shape)
    if layer.kind == "linear":
        n_out, n_in = layer.weight.shape
        rows = math.prod(sample_shape[:-1])
        return _Plan(fanout, float(rows * (2 * n_in - 1) * n_out), n_out, True)
    with torch.no_grad():
        example = torch.zeros((1, *sample_shape), dtype=layer.weight.dtype, device=layer.weight.device)
        out_shape = layer.linear(example, layer.weight).shape
    macs = math.prod(out_shape[1:]) * math.prod(layer.weight.shape[1:])  # each output: C_in/groups · kernel MACs
    return _Plan(fanout, float(2 * macs), 0, False)


def _hybrid(step: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """:data:`HYBRID` of one layer from its per-step ``sigma_delta`` and ``dense`` counts, with its two parts."""
    if "sigma_delta" not in step:
        return {}
    sd, dense = step["sigma_delta"], step["dense"]
    takes_sd = sd <= dense
    additions, dense_path = torch.where(takes_sd, sd, 0.0), torch.where(takes_sd, 0.0, dense)
    return {HYBRID: additions + dense_path, HYBRID_ADDITIONS: additions, HYBRID_DENSE: dense_path}


# functions of one layer's per-step counts (kind -> [T]) that give further kinds of that layer
DERIVED = (_hybrid,)


@dataclass
class OpCounts:
    """Op counts of the steps run since the last ``reset()``; plain data.

    Counts are summed over the batch (independent streams); :meth:`per_sample` divides by steps × batch.
    Totals are always there; per-step counts (:meth:`per_step`, :meth:`per_layer_step`) only when the network
    was asked to keep them (``net.per_step_counts = "total"`` or ``"layer"``, before the stream).

    Attributes:
        steps: time steps counted.
        batch_size: streams per step.
        totals: ``totals[kind][layer]``: ops over all steps (summed over the batch).
        step_totals: ``kind -> [steps]`` ops per step summed over layers, or ``None`` when not recorded.
        layer_steps: ``kind -> layer -> [steps]``, or ``None`` when not recorded per layer.
        steps_note: why per-step counts are missing (the error message of :meth:`per_step`).
    """

    steps: int
    batch_size: int
    totals: dict[str, dict[str, float]] = field(default_factory=dict)
    step_totals: dict[str, np.ndarray] | None = None
    layer_steps: dict[str, dict[str, np.ndarray]] | None = None
    steps_note: str = ""
    scheme: str = "sigma-delta"  # the delta scheme that ran (threshold: its additions are multiply-adds)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in self.totals if ":" not in k)  # "kind:part" entries are internal

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(next(iter(self.totals.values()), {}))

    def _check(self, kind: str) -> None:
        if kind not in self.totals:
            why = ("run the network in sigma-delta mode to count it" if kind.startswith("sigma_delta") else
                   "run the network in rounding or sigma-delta mode to count it" if kind.startswith("rounding")
                   else "run the network in original or temporal-difference mode to count it")
            hint = (f" (op kinds are spelled with underscores, {kind.replace('-', '_')!r}; the network's modes with "
                    "hyphens)" if kind.replace("-", "_") in KINDS else "")
            raise KeyError(f"no {kind!r} counts for these steps ({why}); available: {list(self.kinds)}"
                           if kind in KINDS else f"unknown op kind {kind!r}{hint}; choose from {KINDS}")

    def total(self, kind: str) -> float:
        """All ops of ``kind`` over all layers, steps and streams."""
        self._check(kind)
        return float(sum(self.totals[kind].values()))

    def per_sample(self, kind: str) -> float:
        """Mean ops of ``kind`` per step and stream (per sample, per frame)."""
        return self.total(kind) / max(self.steps * self.batch_size, 1)

    def per_layer(self, kind: str) -> dict[str, float]:
        """Layer name -> ops of ``kind`` over all steps and streams."""
        self._check(kind)
        return dict(self.totals[kind])

    def per_step(self, kind: str) -> np.ndarray:
        """Ops of ``kind`` at each step, summed over layers and streams: ``[steps]``.

        Raises:
            ValueError: per-step counts were not recorded (the message says how to ask for them).
        """
        self._check(kind)
        if self.step_totals is None:
            raise ValueError(self.steps_note)
        return self.step_totals[kind].copy()

    def per_layer_step(self, kind: str) -> dict[str, np.ndarray]:
        """Layer name -> ops of ``kind`` at each step: ``[steps]``. Needs ``net.per_step_counts = "layer"``."""
        self._check(kind)
        if self.layer_steps is None:
            raise ValueError(self.steps_note if self.step_totals is None else
                             "per-step counts were kept summed over layers only (net.per_step_counts = 'total'); "
                             "set net.per_step_counts = 'layer' before the stream for them per layer")
        return {layer: v.copy() for layer, v in self.layer_steps[kind].items()}

    def energy_nj(self, kind: str, precision: str = "int32", per_sample: bool = False) -> float:
        """Energy of the counted ops in nJ (Horowitz 2014 table; int32, as in the paper, by default)."""
        if kind == HYBRID:  # additions where a layer took the sigma-delta path, the original's mix where dense
            self._check(kind)
            add, mixed = energy_per_op_pj("sigma_delta", precision), energy_per_op_pj("dense", precision)
            pj = add * sum(self.totals[HYBRID_ADDITIONS].values()) + mixed * sum(self.totals[HYBRID_DENSE].values())
            return pj / 1000.0 / (max(self.steps * self.batch_size, 1) if per_sample else 1)
        ops = self.per_sample(kind) if per_sample else self.total(kind)
        priced_as = EVENTS if (kind == ADDITIONS and self.scheme == "threshold") else kind
        return ops * energy_per_op_pj(priced_as, precision) / 1000.0

    def to_dict(self) -> dict:
        """JSON-ready summary: per kind, the total, per-sample and per-layer counts."""
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "kinds": {k: {"total": self.total(k), "per_sample": self.per_sample(k), "per_layer": self.per_layer(k),
                          "energy_nj_int32": self.energy_nj(k)} for k in self.kinds},
        }


class _Series:
    """A float64 array that grows by appending: 8 bytes a value, amortized O(1) (the capacity doubles)."""

    __slots__ = ("_data", "_size")

    def __init__(self):
        self._data = np.empty(64)
        self._size = 0

    def extend(self, values: np.ndarray) -> None:
        end = self._size + len(values)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)))
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:end] = values
        self._size = end

    def array(self) -> np.ndarray:
        return self._data[:self._size].copy()


class OpCounter:
    """Running op counts of a network's layers, from their quantizers' records.

    Keeps totals per layer and kind (bounded memory on any stream) and, as :attr:`per_step` asks, per-step
    counts: ``None`` (the default) none, ``"total"`` each kind per step summed over layers, ``"layer"`` per
    layer and step.
    """

    def __init__(self, layers: dict[str, SigmaDeltaLinear], quantizers: dict[str, Quantizer],
                 layer_inputs: dict[str, str]):
        self.layers = layers
        self.quantizers = quantizers
        self.layer_inputs = layer_inputs
        self._plans: dict[str, _Plan] = {}
        self.per_step: str | None = None
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.batch_size = 0
        self._totals: dict[str, dict[str, float]] = {}  # layer -> kind -> ops so far
        self._series: dict[tuple[str, str], _Series] = {}  # (layer, or "" for the sum over layers; kind) -> per step
        self._recorded_from = 0  # the step from which per-step counts are kept
        self._scratch = torch.empty(0)

    def set_per_step(self, what: str | None) -> None:
        """Choose what is kept per step (:data:`PER_STEP`). Counts from now on; totals are unaffected."""
        if what not in PER_STEP:
            raise ValueError(f"per-step counts must be one of {PER_STEP}, got {what!r}")
        if what != self.per_step:
            self.per_step = what
            self._series = {}
            self._recorded_from = self.steps

    def _scratch_like(self, v: torch.Tensor) -> torch.Tensor:
        """A reused buffer shaped like ``v``: a fresh tensor of a feature map's size per count would cost page
        faults (the CPU allocator does not cache) on the order of the count itself."""
        if (self._scratch.dtype != v.dtype or self._scratch.device != v.device or self._scratch.numel() < v.numel()
                or self._scratch.is_inference() != torch.is_inference_mode_enabled()):
            self._scratch = torch.empty(v.numel(), dtype=v.dtype, device=v.device)
        return self._scratch[:v.numel()].view(v.shape)

    def _plan_for(self, name: str, sample_shape: tuple[int, ...]) -> _Plan:
        plan = self._plans.get(name)
        if plan is None or plan.fanout.shape != sample_shape:
            plan = self._plans[name] = _plan(self.layers[name], sample_shape)
        return plan

    def _layer_counts(self, name: str, steps: int, batch_size: int) -> dict[str, torch.Tensor]:
        """Kind -> ops per step ``[steps]`` (float64, CPU) of layer ``name`` in the call that just ran."""
        seen = self.quantizers[self.layer_inputs[name]].observation
        x = seen.x
        plan = self._plan_for(name, tuple(x.shape[1:]))
        per_step = {"dense": torch.full((steps,), plan.dense * batch_size, dtype=torch.float64)}
        # 0/1 indicators in the record's dtype: abs/sign/clamp run several times faster than ne + bool cast
        if seen.r is None:  # x is the original network's activation only in the unquantized modes
            nonzero = x.abs().sign_()
            if plan.is_linear:
                nnz_rows = nonzero.reshape(steps, -1, x.shape[-1]).sum(-1, dtype=torch.float64)  # (T, B·rows)
                per_step["sparse"] = ((2 * nnz_rows - 1).clamp(min=0) * plan.n_out).sum(1).cpu()
            else:
                per_step["sparse"] = 2 * plan.weighted(nonzero, steps)
        real_messages = self.quantizers[self.layer_inputs[name]].scheme == "threshold"
        for key, (additions, muladd) in INTEGER_RECORDS.items():
            sent = getattr(seen, key)
            if sent is not None:
                magnitude = torch.abs(sent, out=self._scratch_like(sent))  # integers, or real (threshold)
                if not (real_messages and key == "s"):
                    per_step[additions] = plan.weighted(magnitude, steps)
                per_step[muladd] = 2 * plan.weighted(magnitude.sign_(), steps)
                if real_messages and key == "s":  # real-valued messages: counted as multiply-adds in both
                    per_step[additions] = per_step[muladd]
        for derive in DERIVED:
            per_step.update(derive(per_step))
        return per_step

    @torch.no_grad()
    def update(self, steps: int, batch_size: int) -> None:
        """Count the call that just ran: ``steps`` time steps of ``batch_size`` streams."""
        over_layers: dict[str, torch.Tensor] = {}
        for name in self.layers:
            per_step = self._layer_counts(name, steps, batch_size)
            totals = self._totals.setdefault(name, {})
            sums = torch.stack(tuple(per_step.values())).sum(1).tolist()  # integers: exact in float64 below 2**53
            for kind, ops in zip(per_step, sums):
                totals[kind] = totals.get(kind, 0.0) + ops
            if self.per_step == "layer":
                for kind, v in per_step.items():
                    self._series.setdefault((name, kind), _Series()).extend(v.numpy())
            elif self.per_step == "total":
                for kind, v in per_step.items():
                    over_layers[kind] = over_layers[kind] + v if kind in over_layers else v
        for kind, v in over_layers.items():
            self._series.setdefault(("", kind), _Series()).extend(v.numpy())
        self.steps += steps
        self.batch_size = batch_size

    def counts(self) -> OpCounts:
        first = next(iter(self._totals.values()), {})
        present = [k for k in first if all(k in t for t in self._totals.values())]
        kinds = [k for k in KINDS if k in present] + [k for k in present if k not in KINDS]
        totals = {k: {name: t[k] for name, t in self._totals.items()} for k in kinds}
        schemes = {q.scheme for q in self.quantizers.values()}
        result = OpCounts(self.steps, self.batch_size, totals, steps_note=self._steps_note(),
                          scheme=schemes.pop() if len(schemes) == 1 else "mixed")
        if self.per_step is None or self._recorded_from:
            return result
        if self.per_step == "layer":
            result.layer_steps = {k: {name: self._series_array(name, k) for name in self._totals} for k in kinds}
            result.step_totals = {k: np.sum(list(v.values()), axis=0) if v else np.zeros(self.steps)
                                  for k, v in result.layer_steps.items()}
        else:
            result.step_totals = {k: self._series_array("", k) for k in kinds}
        return result

    def _series_array(self, layer: str, kind: str) -> np.ndarray:
        series = self._series.get((layer, kind))
        return series.array() if series is not None else np.zeros(0)

    def _steps_note(self) -> str:
        if self.per_step is None:
            return ("per-step counts were not kept (they are off by default, so that counting takes bounded memory "
                    "on any stream): set net.per_step_counts = 'total' (summed over layers) or 'layer' before the "
                    "stream")
        return (f"per-step counts were kept from step {self._recorded_from} only (net.per_step_counts was set "
                "mid-stream): set it before the stream starts, or call net.reset()")
