"""Wall-clock benchmark of the event engine against the original network at its best, measured side by side.

>>> import torch, sigmadelta
>>> from sigmadelta.eval.timing import benchmark
>>> from sigmadelta.testing import mlp, correlated_stream
>>> model = mlp((64, 128, 10))
>>> net = sigmadelta.convert(model, torch.zeros(1, 64)).set_scheme("threshold", theta=0.05)
>>> r = benchmark(net, correlated_stream(12, (64,)), original=model, repeats=2, profile=False)
>>> sorted(k for k in r if k.startswith("speedup"))
['speedup', 'speedup_nchw']

Method (one call, one process, the same frames and threads for every side):

1. The original model in eval mode under ``torch.inference_mode``, frame by frame, two ways: as given (NCHW)
   and converted to channels-last (weights and each input frame; its faster layout on CPUs with oneDNN).
2. The engine: ``net.engine.run`` (the backend's own work; ``net.run`` adds the network's input check,
   reported on its own as ``input_check_ms_per_frame``) with op counting off. Each repeat starts new streams
   and runs frame 0 untimed (a stream's first frame runs densely); frames ``1..T-1`` are timed.
3. Repeats interleave the three (A B C A B C ...) after one untimed warm-up pass of each; each side's time is
   the median over repeats of its mean time per frame. ``speedup`` is against the faster original layout.
4. Op counts and the reference outputs come from the dense simulation of the same sigma-delta network.
"""

from __future__ import annotations

import copy
import datetime
import math
import statistics
import time

import numpy as np
import torch
from torch import nn

from .._utils.threads import torch_threads
from ..files.scales import scale_values
from .metrics import change_latency, held_answers, skip_period

__all__ = ["benchmark"]


def benchmark(net, frames: torch.Tensor, *, original: nn.Module | None = None, threads: int = 1, repeats: int = 5,
              profile: bool = True, policy: str = "auto", compare: tuple[str, ...] = (), meta: dict | None = None
              ) -> dict:
    """Time the event engine (``net``, converted, scales and scheme set) against its original network.

    Args:
        net: a :class:`~sigmadelta.SigmaDeltaNet`; it is left in ``"sigma-delta"`` mode on the ``"events"``
            backend.
        frames: ``[T, B, ...]``, ``T >= 3``; ``B`` streams at once (the originals run the batch of ``B``).
        original: the dense baseline (eval mode); ``None``: the net in ``"original"`` mode (BatchNorm folded).
        threads: ``torch.set_num_threads`` for every side (restored afterwards).
        repeats: timed passes of each side.
        profile: add the engine's per-step profile and per-layer efficiencies (one more pass, timers on).
        policy: the engine's layer policy (:meth:`~sigmadelta.runtime.events.EventEngine.set_policy`).
        compare: other backends to time the same way, interleaved, each on its own copy of the net
            (``ms_per_frame[name]``).
        meta: entries copied into the result (model, data, command, ...).

    Returns:
        A JSON-ready dict: ``ms_per_frame`` (``nchw``, ``channels_last``, ``engine``), ``speedup`` (against the
        faster original), ``speedup_nchw``, ``events_ratio`` (the original's ops / the sigma-delta network's
        events, ``sigma_delta_muladd``, over the timed frames), ``efficiency`` (speedup / events ratio),
        ``max_abs_diff`` / ``rel_max_abs_diff`` / ``argmax_agreement`` (engine vs dense simulation),
        ``top1_agreement`` (engine and simulation vs the per-frame original), ``frame_skipping`` (the original
        on every N-th frame at the engine's wall-clock, :func:`frame_skipping`), ``change_latency``, ``paths``,
        ``activity``, ``break_even``, ``memory``, ``build_seconds`` and, with ``profile``, ``profile`` and
        ``layers`` (per layer: time, dense time, events ratio, efficiency); ``scheme`` and ``scales``: what ran.
    """
    if frames.dim() < 3 or frames.shape[0] < 3:
        raise ValueError(f"frames must be a clip [T, B, ...] with T >= 3, got shape {tuple(frames.shape)}")
    if original is None:
        original = net.dense_copy("original")
    original = original.eval()
    with torch_threads(threads), net.configured(counting=net.counting, per_step_counts=net.per_step_counts):
        result = _measure(net, original, frames, threads, repeats, profile, policy, compare)
    ran = {"scheme": net.scheme_config.to_dict(), "scales": scale_values(net)}
    return {**(meta or {}), "date": datetime.date.today().isoformat(), **ran, **result}


def _measure(net, original, frames, threads, repeats, profile, policy, compare) -> dict:
    timed = frames[1:]
    reference, counts = _reference(net, frames)
    orig_out = _run_original(original, frames)
    net.set_mode("sigma-delta").set_backend("events")
    engine = net.engine
    engine.set_policy(policy)
    net.counting = False
    start = time.perf_counter()
    out = net.run(frames)  # builds the plan (compiles or loads the kernels) and gives the outputs to compare
    first_call = time.perf_counter() - start
    check = _input_check_seconds(net, timed)
    others = {name: net.dense_copy("sigma-delta").set_backend(name) for name in compare}
    sides = _timings(net, original, frames, repeats, others)
    ms = {side: 1e3 * statistics.median(times) for side, times in sides.items()}
    best_dense = min(ms["nchw"], ms["channels_last"])
    ops = {kind: float(counts.per_step(kind)[1:].sum()) for kind in ("dense", "sigma_delta", "sigma_delta_muladd")}
    events_ratio = ops["dense"] / max(ops["sigma_delta_muladd"], 1.0)
    speedup = best_dense / ms["engine"]
    diff = (out - reference).abs()
    scale = reference.abs().max().item()
    top1, engine_top1 = orig_out.argmax(-1).numpy(), out.argmax(-1).numpy()  # (T, B)
    skip = skip_period(speedup, len(frames))  # the skipper spends at least the engine's wall-clock
    skipper = _skipper(top1, skip)
    result = {
        "frames": len(timed), "streams": frames.shape[1], "threads": threads, "policy": policy,
        "ms_per_frame": ms, "speedup": speedup, "speedup_nchw": ms["nchw"] / ms["engine"],
        "events_ratio": events_ratio, "efficiency": speedup / events_ratio,
        "additions_ratio": ops["dense"] / max(ops["sigma_delta"], 1.0),
        "input_check_ms_per_frame": 1e3 * check,
        "max_abs_diff": diff.max().item(), "rel_max_abs_diff": diff.max().item() / max(scale, 1e-30),
        "frames_beyond_1e-4": int((diff.flatten(2).amax((1, 2)) > 1e-4 * scale).sum()),
        "argmax_agreement": float((engine_top1 == reference.argmax(-1).numpy()).mean()),
        "top1_agreement": {"engine": float((engine_top1 == top1).mean()),
                           "simulation": float((reference.argmax(-1).numpy() == top1).mean()),
                           "frame_skipping": skipper["top1_agreement"]},
        "frame_skipping_every": skip,
        "change_latency": {"engine": _latency(top1, engine_top1), "frame_skipping": skipper["change_latency"]},
        "paths": engine.paths(), "activity": engine.activity(), "break_even": engine.break_even(),
        "memory": engine.memory(), "build_seconds": engine.build_seconds, "first_call_seconds": first_call,
    }
    if profile:
        result["profile"], result["layers"] = _profile(net, frames, counts)
    return result


def _reference(net, frames):
    """The dense simulation's outputs and op counts per layer and step (the first frame is left out by the
    caller), in chunks of frames (memory)."""
    chunk = max(1, int(6e5 // max(frames[0].numel(), 1)))
    pieces = []
    with net.configured(mode="sigma-delta", backend="dense", counting=True, per_step_counts="layer"):
        with torch.no_grad():
            for start in range(0, len(frames), chunk):
                pieces.append(net.run(frames[start:start + chunk]))
        counts = net.op_counts()
    return torch.cat(pieces), counts


@torch.inference_mode()
def _run_original(original, frames) -> torch.Tensor:
    return torch.stack([original(f) for f in frames])


def _input_check_seconds(net, timed) -> float:
    """Per frame, what ``net.run`` adds before the engine runs: its check of the input (finite, shapes)."""
    start = time.perf_counter()
    net._check(timed, "clip", 2)  # noqa: SLF001  the same check, on the same frames
    return (time.perf_counter() - start) / len(timed)


def _timings(net, original, frames, repeats, others: dict) -> dict[str, list[float]]:
    """Per side, seconds per frame over the frames after the first, ``repeats`` interleaved passes (``others``:
    backend name -> a net copy on that backend)."""
    timed = frames[1:]
    channels_last = copy.deepcopy(original).to(memory_format=torch.channels_last)
    is_image = frames.dim() >= 5
    fmt = {5: torch.channels_last, 6: torch.channels_last_3d}.get(frames.dim())

    def nchw():
        with torch.inference_mode():
            for f in timed:
                original(f)

    def last():
        with torch.inference_mode():
            for f in timed:
                channels_last(f.contiguous(memory_format=fmt) if is_image and fmt is not None else f)

    def backend(net_b):
        def run():
            net_b.reset()  # new streams; the first frame (dense) untimed
            net_b.engine.run(frames[:1])
            start = time.perf_counter()
            net_b.engine.run(timed)
            return time.perf_counter() - start
        return run

    engines = {"engine": backend(net)} | {name: backend(other) for name, other in others.items()}
    sides = {side: [] for side in ("nchw", "channels_last", *engines)}
    nchw(), last(), [run() for run in engines.values()]  # warm-up
    for _ in range(repeats):
        for side, fn in (("nchw", nchw), ("channels_last", last)):
            start = time.perf_counter()
            fn()
            sides[side].append((time.perf_counter() - start) / len(timed))
        for side, run in engines.items():
            sides[side].append(run() / len(timed))
    return sides


def _skipper(orig_top1: np.ndarray, every: int) -> dict:
    """The original run on every ``every``-th frame only, its answer held (:func:`~sigmadelta.eval.metrics.held_answers`):
    its top-1 agreement with the per-frame original and its change latency, over the ``[T, B]`` streams."""
    held = held_answers(orig_top1, every)
    return {"top1_agreement": float((held == orig_top1).mean()), "change_latency": _latency(orig_top1, held)}


def _latency(orig_top1: np.ndarray, top1: np.ndarray) -> dict:
    """:func:`~sigmadelta.eval.metrics.change_latency` of ``top1 [T, B]``, pooled over the streams (changes,
    missed) and averaged over the changes (frames)."""
    per = [change_latency(orig_top1[:, b], top1[:, b]) for b in range(orig_top1.shape[1])]
    changes = sum(p.changes for p in per)
    frames = sum(p.mean_frames * p.changes for p in per if p.changes) / changes if changes else math.nan
    return {"changes": changes, "mean_frames": frames, "missed": sum(p.missed for p in per)}


def _profile(net, frames, counts) -> tuple[dict, dict]:
    """Per step, the mean µs per frame over the timed frames, largest first, totals per kind; and per layer its
    time (its quantizer's and its own), the dense form's measured time, its events ratio and its efficiency
    (time speed-up over its dense form ÷ its events ratio)."""
    engine = net.engine
    net.reset()
    engine.run(frames[:1])
    engine.profile = True
    try:
        engine.run(frames[1:])
    finally:
        engine.profile = False
    per_step = {name: 1e6 * statistics.mean(times) for name, times in engine.timings.items()}
    kinds = {step.name: step.kind for step in engine.plan.steps}
    per_kind: dict[str, float] = {}
    for name, us in per_step.items():
        per_kind[kinds[name]] = per_kind.get(kinds[name], 0.0) + us
    dense_ops = {k: float(v[1:].sum()) for k, v in counts.per_layer_step("dense").items()}
    events = {k: float(v[1:].sum()) for k, v in counts.per_layer_step("sigma_delta_muladd").items()}
    layers = {}
    for layer in engine.plan.layers:
        own, quant = per_step.get(layer.name, 0.0), per_step.get(layer.q.name, 0.0)
        shared = sum(1 for other in engine.plan.layers if other.q is layer.q)
        us = own + quant / shared  # a quantizer read by several layers is split between them
        ratio = dense_ops.get(layer.name, 0.0) / max(events.get(layer.name, 0.0), 1.0)
        dense_us = 1e6 * layer.t_dense
        layers[layer.name] = {"us": us, "layer_us": own, "quantize_us": quant / shared, "dense_us": dense_us,
                              "events_ratio": ratio, "speedup": dense_us / max(us, 1e-9),
                              "efficiency": dense_us / max(us, 1e-9) / max(ratio, 1e-9)}
    ordered = dict(sorted(per_step.items(), key=lambda kv: -kv[1]))
    return {"total_us": sum(per_step.values()), "per_kind_us": per_kind, "per_step_us": ordered}, layers
