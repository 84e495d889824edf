"""The event engine: runs a planned network frame by frame, chooses each layer's path, keeps diagnostics."""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch

from ...core.modules import Observation
from ._kquant import BLOCK
from .plan import build_plan

__all__ = ["EventEngine", "POLICIES"]

POLICIES = ("auto", "events", "dense")  # per layer: measured break-even; events whenever possible; always dense


class EventEngine:
    """Runs a :class:`~sigmadelta.SigmaDeltaNet` in sigma-delta mode with work that follows its messages.

    Built by ``net.set_backend("events")``; the net calls :meth:`run` (a clip ``[T, B, ...]`` of ``B``
    independent streams, each with its own state) and :meth:`reset`. The plan
    (:mod:`~sigmadelta.runtime.events.plan`) is built on the first call for a batch size, and each layer's
    break-even measured then (:meth:`~sigmadelta.runtime.events.layers.LayerStep.calibrate`). A stream's first
    frame runs every layer densely.

    >>> import torch, sigmadelta
    >>> from sigmadelta.testing import mlp, correlated_stream
    >>> net = sigmadelta.convert(mlp((16, 32, 4)), torch.zeros(1, 16)).set_scheme("threshold", theta=0.1)
    >>> _ = net.set_mode("sigma-delta").set_backend("events")
    >>> out = net.run(correlated_stream(8, (16,), batch=2))   # (T, B, 4)
    >>> sorted(net.engine.paths()["0"])
    ['dense', 'idle', 'sparse']

    Diagnostics: :meth:`paths` (frames per path and layer), :meth:`activity` (messages per input unit),
    :meth:`break_even` (the measured activity where a layer's events cost its dense form), :meth:`memory`;
    with :attr:`profile`, :attr:`timings`. :meth:`set_policy` forces paths.

    Attributes:
        profile: when true, :attr:`timings` collects seconds per step over the frames run.
        timings: step name -> seconds per frame run with ``profile`` on.
        build_seconds: how long the last plan took to build (kernels compiled or loaded from the cache, layers
            calibrated).
    """

    def __init__(self, net):
        self.net = net
        self.batch_size: int | None = None
        self.plan = None
        self.profile = False
        self.timings: dict[str, list[float]] = defaultdict(list)
        self.build_seconds = 0.0
        self._policy: dict[str, str] | str = "auto"
        self._fresh = True
        self._frames = 0

    # --- settings ----------------------------------------------------------------------------------------

    def set_policy(self, policy: str | dict[str, str] = "auto") -> None:
        """How layers choose their path: ``"auto"`` (events below the measured break-even, else dense),
        ``"events"`` (events whenever the messages fit, dense only on a stream's first frame) or ``"dense"``;
        one for all layers, or a mapping layer name -> policy (layers left out: ``"auto"``)."""
        names = [policy] if isinstance(policy, str) else list(policy.values())
        bad = [p for p in names if p not in POLICIES]
        if bad:
            raise ValueError(f"unknown policy {bad[0]!r}; choose from {POLICIES}")
        self._policy = policy if isinstance(policy, str) else dict(policy)
        if self.plan is not None:
            self._apply_policy()

    def _apply_policy(self) -> None:
        for layer in self.plan.layers:
            p = self._policy if isinstance(self._policy, str) else self._policy.get(layer.name, "auto")
            layer.policy = POLICIES.index(p)
        self._set_caps()

    def _set_caps(self) -> None:
        """Per quantizer, the most messages worth listing: all of them if a reader may take them all, else twice
        the largest break-even of its layers (a list past that is never used)."""
        for q in self.plan.quantizers:
            readers = [layer for layer in self.plan.layers if layer.q is q]
            if any(layer.policy == 1 for layer in readers):
                q.cap = q.units
            else:
                q.cap = int(min(q.units, max((2 * layer.break_even() for layer in readers if layer.policy == 0),
                                             default=0)))

    # --- state -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start new streams: every level to zero; the next frame runs densely and refills every buffer."""
        if self.plan is not None:
            for q in self.plan.quantizers:
                q.level.fill(0)
            for step in self.plan.steps:
                if hasattr(step, "reset"):
                    step.reset()
            for layer in self.plan.layers:
                layer.paths = dict.fromkeys(layer.paths, 0)
                layer.events = 0
        self._fresh = True
        self._frames = 0
        self.timings.clear()

    # --- running -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def run(self, clip: torch.Tensor) -> torch.Tensor:
        """Run ``clip`` ``[T, B, ...]`` frame by frame; returns ``[T, B, ...]``."""
        steps, batch = clip.shape[:2]
        if self.batch_size != batch:
            self._build(batch)
        plan = self.plan
        counting = bool(getattr(self.net, "counting", False))
        for q in plan.quantizers:
            q.refresh()
            q.counting = counting
            for chunks in q.records.values():
                chunks.clear()
        clip = clip.contiguous()
        y = plan.output.logical()
        out = torch.empty((steps, *y.shape), dtype=y.dtype)
        for t in range(steps):
            frame = clip[t]
            if plan.image is not None:
                plan.image.frame = frame.numpy().reshape(batch, plan.image.channels, plan.image.pixels)
            if plan.input is not None:
                plan.input.frame = frame
            self._frame()
            out[t].copy_(plan.output.logical())
        if counting:
            for q in plan.quantizers:
                q.q.observation = Observation(**{key: torch.cat(chunks) for key, chunks in q.records.items()})
                for chunks in q.records.values():
                    chunks.clear()
        return out

    def _frame(self) -> None:
        fresh, self._fresh = self._fresh, False
        self._frames += 1
        if self._frames % 16 == 0:
            self._set_caps()
        for st in self.plan.storages:
            st.clear()
        if not self.profile:
            for step in self.plan.steps:
                step.run(fresh)
            return
        for step in self.plan.steps:
            start = time.perf_counter()
            step.run(fresh)
            self.timings[step.name].append(time.perf_counter() - start)

    # --- planning ----------------------------------------------------------------------------------------

    def _build(self, batch: int) -> None:
        start = time.perf_counter()
        with torch.inference_mode(False):  # plain tensors: the state stays writable outside inference mode
            plan = build_plan(self.net.graph_module, self.net, batch)
        self.plan, self.batch_size = plan, batch
        _share_buffers(plan)
        for q in plan.quantizers:
            q.refresh()
        for layer in plan.layers:
            layer.calibrate()
        self._apply_policy()
        self.reset()
        self.build_seconds = time.perf_counter() - start

    # --- diagnostics -------------------------------------------------------------------------------------

    def paths(self) -> dict[str, dict[str, int]]:
        """Layer name -> frames since the last reset that ran ``"sparse"`` (events), ``"dense"`` or ``"idle"``
        (no message)."""
        return {layer.name: dict(layer.paths) for layer in self._layers()}

    def activity(self) -> dict[str, float]:
        """Layer name -> mean fraction of its input units that sent a message, per frame since the last reset
        (a stream's first frame, where every unit does, left out)."""
        return {layer.name: layer.events / max(sum(layer.paths.values()) - 1, 1) / max(layer.units_in, 1)
                for layer in self._layers()}

    def break_even(self) -> dict[str, float]:
        """Layer name -> the fraction of its input units sending messages at which its event kernel is
        estimated (measured timings) to cost what its dense form costs."""
        return {layer.name: layer.break_even() / max(layer.units_in, 1) for layer in self._layers()}

    def memory(self) -> dict[str, int]:
        """Bytes held: ``state`` (levels, value buffers, running sums), ``plan`` (weights laid out for events,
        index maps, message lists) and, for scale, ``weights`` (the network's weights in its dtype)."""
        plan = self.plan
        if plan is None:
            return {"state_bytes": 0, "plan_bytes": 0, "weight_bytes": 0}
        state = sum(q.state_nbytes() for q in plan.quantizers) + sum(st.nbytes() for st in plan.storages)
        state += sum(step.state_nbytes() for step in plan.steps if hasattr(step, "state_nbytes") and step.kind != "quantize")
        lists = {id(a): a.nbytes for q in plan.quantizers for a in (q.pix_buffer, q.ch_buffer, q.val_buffer)}
        plan_bytes = sum(layer.plan_nbytes() for layer in plan.layers) + sum(lists.values())
        plan_bytes += sum(step.plan_nbytes() for step in plan.steps if hasattr(step, "plan_nbytes") and step.kind != "layer")
        weights = sum(layer.weight.numel() * layer.weight.element_size() for layer in self.net.layers.values())
        return {"state_bytes": int(state), "plan_bytes": int(plan_bytes), "weight_bytes": int(weights)}

    def _layers(self):
        return self.plan.layers if self.plan is not None else []


def _share_buffers(plan) -> None:
    """Give each quantizer its CSR list and scratch, sharing buffers between quantizers whose lists are never
    alive at once (a list lives from its quantizer's step to the last layer reading it)."""
    index = {id(step): i for i, step in enumerate(plan.steps)}
    pool: list[dict] = []  # end (step index), rows, units, members
    for q in plan.quantizers:
        begin = index[id(q)]
        end = max((index[id(layer)] for layer in plan.layers if layer.q is q), default=begin)
        free = next((b for b in pool if b["end"] < begin), None)
        if free is None:
            free = {"end": end, "rows": 0, "units": 0, "members": []}
            pool.append(free)
        free["end"] = end
        free["rows"], free["units"] = max(free["rows"], q.rows), max(free["units"], q.units)
        free["members"].append(q)
    width = max([q.channels for q in plan.quantizers] + [1])
    for buf in pool:
        dtype = buf["members"][0].dtype
        pix, ptr = np.zeros(buf["rows"] + 1, np.int32), np.zeros(buf["rows"] + 2, np.int32)
        ch, val = np.zeros(buf["units"] + 1, np.int32), np.zeros(buf["units"] + 1, dtype)
        for q in buf["members"]:
            q.pix, q.ptr, q.ch, q.val = pix, ptr, ch, val
            q.pix_buffer, q.ch_buffer, q.val_buffer = pix, ch, val
            if q.image:
                q.scratch = (np.zeros((q.channels, BLOCK), dtype), np.zeros(BLOCK, np.uint8))
            else:
                q.scratch = np.zeros(width, dtype)[:q.channels]
