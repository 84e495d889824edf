"""Sparse execution of a Sigma-Delta network: the work of each frame follows its nonzero quantized deltas.

``net.set_backend("sparse")`` builds a :class:`SparseEngine`; in ``"sigma-delta"`` mode ``net(x)`` and
``net.run(clip)`` then run here instead of through the dense simulation (the reference, ``"dense"``).
Both compute the same network (module docstring of :mod:`sigmadelta.core.modules`):

.. math::

    r_t = f(k x_t, r_{t-1}), \\quad s_t = r_t - r_{t-1}, \\quad u_t = u_{t-1} + W s_t / k
    \\;\\; (u_0 = b)

with ``f`` the level recurrence of the network's delta scheme (:mod:`sigmadelta.core.functional`: ``round`` for the
paper's, hysteresis, or the peers' thresholds with ``k = 1``), the same function the simulation calls. ``r`` is
then a level, not always ``round(k x)``; below, "integers" means these levels and their differences.

The simulation applies ``W`` to all of ``s_t``, zeros included. Here only the nonzero entries of ``s_t`` do
work: a fully connected layer gathers the rows of ``Wᵀ`` of its active inputs (``embedding_bag``), and a
convolution multiplies the channel vectors of its active input pixels with its kernel and scatter-adds the
products into the output pixels they reach. Everything downstream (nonlinearities, padding, residual adds,
the next quantizer) then touches only the output rows that changed, the *dirty rows*.

Plan, then execute
------------------
The parts: :mod:`~sigmadelta.runtime.values` (per-node buffers and dirty rows, the step base),
:mod:`~sigmadelta.runtime.quantize` (the quantizer step), :mod:`~sigmadelta.runtime.layers` (fully connected and
convolution steps), :mod:`~sigmadelta.runtime.ops` (the ops between them), :mod:`~sigmadelta.runtime.plan` (the
graph walk) and this module (the engine: thresholds, state, diagnostics, the frame loop).

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

import time
from collections import defaultdict

import torch
import torch.fx as fx

from ..core.modules import Observation
from .layers import ConvStep, LinearStep
from .plan import build_plan
from .quantize import QuantizeStep
from .values import Step

__all__ = ["SparseEngine", "engine_of", "DENSE_ABOVE", "SPARSE_OVERHEAD"]


# Per layer kind: the fraction of the dense work above which a layer runs densely for the frame, and the fixed
# cost of its sparse path in multiply-adds of its dense path (a layer whose dense work is below that always runs
# densely). Measured with benchmarks/thresholds.py (1 thread, 2-core EPYC; a 56x56 feature map, all of the input
# re-quantized every frame, so the overheads include a full quantizer pass): crossovers at 1.0 (fully connected,
# whose dense product is memory-bound), 0.3 (1x1 and kxk), 0.1 (grouped); never for depthwise, whose dense
# convolution costs 9 multiply-adds per output while the scatter of the sparse path costs more than that.
DENSE_ABOVE = {"linear": 0.9, "pointwise": 0.3, "conv": 0.3, "depthwise": 0.0, "grouped": 0.1}
SPARSE_OVERHEAD = {"linear": 5e5, "pointwise": 4e6, "conv": 6e6, "depthwise": 3e6, "grouped": 4e6}



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
        self.steps: list[Step] = []
        self._quantizers: list[QuantizeStep] = []
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
            if isinstance(step, (LinearStep, ConvStep)):
                kind = "linear" if isinstance(step, LinearStep) else step.variant
                fraction = self.dense_above[kind]
                if fraction >= 1.0:  # sparse whenever possible
                    step.max_active = float("inf")
                else:
                    step.max_active = (fraction * step.dense_work - SPARSE_OVERHEAD[kind]) / step.work_per_active
        for q in self._quantizers:
            q.max_active = max((s.max_active for s in self.steps if isinstance(s, (LinearStep, ConvStep)) and s.q is q),
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
        return {s.name: dict(s.paths) for s in self.steps if isinstance(s, (LinearStep, ConvStep))}

    def activity(self) -> dict[str, float]:
        """Layer name -> mean fraction of its input rows (pixels; inputs of fully connected layers) that were
        active (held a nonzero integer) per frame since the last reset: the work the sparse path does."""
        return {s.name: s.active_rows / max(sum(s.paths.values()), 1) / max(s.q.numel_rows, 1)
                for s in self.steps if isinstance(s, (LinearStep, ConvStep))}

    def memory(self) -> dict:
        """Bytes held by the engine: ``state`` (integers ``r``, accumulators, the value buffers the frame
        updates in place), ``plan`` (transposed weights, index maps) and, for scale, ``weights`` (the
        network's weights in the model's dtype)."""
        values = {id(s.out): s.out for s in self.steps if s.out is not None}
        state = sum(s.state_nbytes() for s in self.steps if isinstance(s, (QuantizeStep, LinearStep)))
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
        """Put the frames' records in each quantizer's ``observation``, as the dense path leaves it, for the
        net's op counter."""
        for q in self._quantizers:
            q.q.observation = Observation(**{key: torch.cat(chunks) for key, chunks in q.records.items()})
            q.records.clear()

    # --- planning ----------------------------------------------------------------------------------------

    def _build(self, batch: int) -> None:
        """Build the plan for ``batch`` streams (:func:`~sigmadelta.runtime.plan.build_plan`)."""
        plan = build_plan(self.gm, self.net, batch)
        self.steps, self._quantizers = plan.steps, plan.quantizers
        self._input, self._output = plan.input, plan.output
        self.batch_size = batch
        self._fresh = True
        self._apply_thresholds()
