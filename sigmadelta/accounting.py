"""Operation and energy accounting (paper-notes, section 5).

Per linear layer and per time step, from what its quantizer sent:

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

Two conventions, named plainly everywhere results are shown: **additions** (the paper's: a message ``n``
costs ``|n|`` additions per connection; the ``sigma_delta`` kind) and **events** (the peers' and the dense
original's: each nonzero message costs one multiply-accumulate per connection, 2 ops; the ``sigma_delta_muladd``
kind, :data:`EVENTS`). Both are counted for every delta scheme (:mod:`sigmadelta.functional`): ``s`` is the
scheme's message ``L_t − L_{t−1}``. The threshold scheme's messages are real numbers, which additions cannot
apply: its ``sigma_delta`` kind counts them as events too (2 ops per nonzero message and connection, priced as
multiply-adds), so both conventions give the same number for it.

``fanout_i`` is exact: the number of outputs input unit ``i`` reaches, fewer at a convolution's borders, with
stride, dilation and groups honoured. It is computed once per layer (a plan) as the gradient of the sum of the
layer's outputs with all-ones weights and input: ∂/∂x_i Σ_o Σ_j 1·x_j = #{(o, j): j = i}.

Biases, nonlinearities, pooling and state updates are not counted, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .modules import Quantizer, SigmaDeltaLinear

__all__ = ["KINDS", "HYBRID", "ADDITIONS", "EVENTS", "ENERGY_PJ", "OpCounts", "OpCounter", "fanout_map", "energy_per_op_pj",
           "hybrid_energy_pj"]

HYBRID = "sigma_delta_hybrid"
ADDITIONS, EVENTS = "sigma_delta", "sigma_delta_muladd"  # the two conventions for a delta network's ops
KINDS = ("dense", "sparse", "rounding", "rounding_muladd", "sigma_delta", "sigma_delta_muladd", HYBRID)
ADD_ONLY = ("rounding", "sigma_delta")

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
    """Exact fan-out of every input unit of ``layer`` for one sample, shape ``sample_shape``, float64."""
    # autograd even when the caller runs under torch.inference_mode() or no_grad: the plan is built once
    with torch.inference_mode(False), torch.enable_grad():
        ones = torch.ones((1, *sample_shape), dtype=torch.float64, requires_grad=True)
        out = layer.linear(ones, torch.ones((layer.weight.shape), dtype=torch.float64))
        (grad,) = torch.autograd.grad(out.sum(), ones)
    return grad[0].detach()


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


@dataclass
class OpCounts:
    """Op counts of the steps run since the last ``reset()``; plain data.

    Counts are summed over the batch (independent streams); :meth:`per_sample` divides by steps × batch.

    Attributes:
        steps: time steps counted.
        batch_size: streams per step.
        counts: ``counts[kind][layer]`` is a float64 array ``[steps]`` of ops per step (summed over the batch).
    """

    steps: int
    batch_size: int
    counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    scheme: str = "sigma-delta"  # the delta scheme that ran (threshold: its additions are multiply-adds)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.counts)

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(next(iter(self.counts.values()), {}))

    def _get(self, kind: str) -> dict[str, np.ndarray]:
        if kind not in self.counts:
            why = ("run the network in sigma-delta mode to count it" if kind.startswith("sigma_delta") else
                   "run the network in rounding or sigma-delta mode to count it" if kind.startswith("rounding")
                   else "run the network in original or temporal-difference mode to count it")
            raise KeyError(f"no {kind!r} counts for these steps ({why}); available: {list(self.counts)}"
                           if kind in KINDS else f"unknown op kind {kind!r}; choose from {KINDS}")
        return self.counts[kind]

    def total(self, kind: str) -> float:
        """All ops of ``kind`` over all layers, steps and streams."""
        return float(sum(v.sum() for v in self._get(kind).values()))

    def per_sample(self, kind: str) -> float:
        """Mean ops of ``kind`` per step and stream (per sample, per frame)."""
        return self.total(kind) / max(self.steps * self.batch_size, 1)

    def per_layer(self, kind: str) -> dict[str, float]:
        """Layer name -> ops of ``kind`` over all steps and streams."""
        return {name: float(v.sum()) for name, v in self._get(kind).items()}

    def per_step(self, kind: str) -> np.ndarray:
        """Ops of ``kind`` at each step, summed over layers and streams: ``[steps]``."""
        per_layer = list(self._get(kind).values())
        return np.sum(per_layer, axis=0) if per_layer else np.zeros(self.steps)

    def per_layer_step(self, kind: str) -> dict[str, np.ndarray]:
        """Layer name -> ops of ``kind`` at each step: ``[steps]``."""
        return dict(self._get(kind))

    def energy_nj(self, kind: str, precision: str = "int32", per_sample: bool = False) -> float:
        """Energy of the counted ops in nJ (Horowitz 2014 table; int32, as in the paper, by default)."""
        if kind == HYBRID:
            sd, dense = self._get("sigma_delta"), self._get("dense")
            pj = float(sum(hybrid_energy_pj(sd[layer], dense[layer], precision).sum() for layer in sd))
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
                          "energy_nj_int32": self.energy_nj(k)} for k in self.counts},
        }


class OpCounter:
    """Accumulates per-step op counts of a network's layers from their quantizers' records."""

    def __init__(self, layers: dict[str, SigmaDeltaLinear], quantizers: dict[str, Quantizer],
                 layer_inputs: dict[str, str]):
        self.layers = layers
        self.quantizers = quantizers
        self.layer_inputs = layer_inputs
        self._plans: dict[str, _Plan] = {}
        self.reset()

    def reset(self) -> None:
        self.steps = 0
        self.batch_size = 0
        self._chunks: dict[str, dict[str, list[torch.Tensor]]] = {}
        self._scratch = torch.empty(0)

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

    @torch.no_grad()
    def update(self, steps: int, batch_size: int) -> None:
        """Count the call that just ran: ``steps`` time steps of ``batch_size`` streams."""
        for name in self.layers:
            record = self.quantizers[self.layer_inputs[name]].record
            x = record["x"]
            plan = self._plan_for(name, tuple(x.shape[1:]))
            per_step = {"dense": torch.full((steps,), plan.dense * batch_size, dtype=torch.float64)}
            # 0/1 indicators in the record's dtype: abs/sign/clamp run several times faster than ne + bool cast
            if "r" not in record:  # x is the original network's activation only in the unquantized modes
                nonzero = x.abs().sign_()
                if plan.is_linear:
                    nnz_rows = nonzero.reshape(steps, -1, x.shape[-1]).sum(-1, dtype=torch.float64)  # (T, B·rows)
                    per_step["sparse"] = ((2 * nnz_rows - 1).clamp(min=0) * plan.n_out).sum(1).cpu()
                else:
                    per_step["sparse"] = 2 * plan.weighted(nonzero, steps)
            real_messages = self.quantizers[self.layer_inputs[name]].scheme == "threshold"
            for kind, key in (("rounding", "r"), ("sigma_delta", "s")):
                if key in record:
                    magnitude = torch.abs(record[key], out=self._scratch_like(record[key]))  # integers
                    if not (real_messages and key == "s"):
                        per_step[kind] = plan.weighted(magnitude, steps)
                    per_step[f"{kind}_muladd"] = 2 * plan.weighted(magnitude.sign_(), steps)
                    if real_messages and key == "s":
                        per_step[kind] = per_step[f"{kind}_muladd"]
            chunks = self._chunks.setdefault(name, {})
            for kind, v in per_step.items():
                chunks.setdefault(kind, []).append(v)
        self.steps += steps
        self.batch_size = batch_size

    def counts(self) -> OpCounts:
        kinds = [k for k in KINDS if all(k in c for c in self._chunks.values())] if self._chunks else []
        counts = {k: {name: torch.cat(c[k]).numpy() for name, c in self._chunks.items()} for k in kinds}
        if "sigma_delta" in counts:
            counts[HYBRID] = {name: np.minimum(sd, counts["dense"][name]) for name, sd in counts["sigma_delta"].items()}
        schemes = {q.scheme for q in self.quantizers.values()}
        return OpCounts(self.steps, self.batch_size, counts, schemes.pop() if len(schemes) == 1 else "mixed")
