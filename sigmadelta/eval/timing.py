"""Wall-clock benchmark of the sparse Sigma-Delta backend against the dense original network.

>>> import torch, sigmadelta
>>> from sigmadelta.eval.timing import benchmark
>>> from sigmadelta.testing import mlp, correlated_stream
>>> result = benchmark(mlp((64, 128, 10)), correlated_stream(20, (64,)), threads=1, repeats=3, scales=8.0)
>>> sorted(result)[:4]
['argmax_agreement', 'data', 'dense_ms_per_frame', 'first_frame_ms']

Method (one call measures both sides, interleaved, on the same frames and threads):

1. Dense original: the model in eval mode under ``torch.inference_mode``, called frame by frame.
2. Sigma-delta, sparse backend: ``net.run`` on the same frames, op counting off. Each repeat starts a new
   stream (``reset``) and runs frame 0 untimed: a stream's first frame is a full dense pass, which a long
   stream amortises. Frames ``1..T-1`` are timed. Its first-frame time is reported on its own.
3. Repeats alternate dense and sparse passes; each side's time is the median over repeats of the mean time per
   frame, after one untimed warm-up pass of each.
4. Op counts and the reference outputs come from the dense simulation of the same sigma-delta network.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import torch
from torch import nn

from .._utils.threads import torch_threads
from ..core.modules import SIGMA_DELTA
from ..net import convert
from .stream import run_stream
from ..runtime.sparse import engine_of

__all__ = ["benchmark", "channels_last_ms"]


def benchmark(net_or_model, frames: torch.Tensor, *, threads: int = 1, repeats: int = 5,
              scales: float | Mapping[str, float] | None = None, original: nn.Module | None = None,
              model: str | None = None, data: str | None = None, profile: bool = True,
              dense_above: Mapping[str, float] | None = None) -> dict:
    """Time the sparse sigma-delta backend against the dense original, frame by frame, on one machine.

    Args:
        net_or_model: an ``nn.Module`` (eval mode; it is the dense baseline and is converted here) or a
            :class:`~sigmadelta.SigmaDeltaNet` (then the baseline is ``original`` if given, else the net in
            ``"original"`` mode, i.e. the converted graph with BatchNorm folded and no quantization).
        frames: a clip ``[T, B, ...]`` (``B = 1``: the benchmark's setting is one stream), ``T >= 2``.
        threads: ``torch.set_num_threads`` for both sides (restored afterwards).
        repeats: timed passes of each side; the median is reported.
        scales: one ``k`` for every quantizer, or a mapping quantizer name -> ``k``; ``None`` keeps the net's.
        original: the dense baseline when ``net_or_model`` is already converted.
        model, data: names to put in the result.
        profile: add a per-step time profile of the sparse backend (one more pass with timers on).
        dense_above: overrides of :data:`sigmadelta.runtime.sparse.DENSE_ABOVE` for this run.

    Returns:
        A JSON-ready dict (the net is left in ``"sigma-delta"`` mode on the sparse backend):

        - ``model``, ``data``, ``frames`` (timed frames), ``threads``;
        - ``dense_ms_per_frame``, ``sigma_delta_ms_per_frame``, ``speedup`` (dense / sparse), ``speedup_paired``
          (median over repeats of the per-repeat ratio, steadier on a loaded machine), ``first_frame_ms``;
        - ``op_reduction``: dense ops / sigma-delta additions over the timed frames, from the dense simulation's
          op counts (the limit the speed-up could approach on hardware that pays per addition);
          ``op_reduction_muladd``: the same with one multiply-add per nonzero integer and connection, closer to
          what the engine does;
        - ``max_abs_diff`` (sparse backend vs dense simulation, all frames), ``rel_max_abs_diff`` (divided by the
          largest output magnitude), ``argmax_agreement``, ``frames_beyond_1e-4`` (frames whose difference exceeds
          1e-4 of the output scale: in float32, a value within rounding error of a quantizer's half-integer
          threshold rounded the other way);
        - ``memory``: engine state and plan bytes against the weights;
        - ``layer_paths``: per layer, the fraction of frames that ran sparse / dense / idle; ``layer_activity``:
          per layer, the mean fraction of input rows with a nonzero integer (a busy layer's unmeasured frames
          count as fully active);
        - ``profile``: per step, the median µs per frame, largest first, and totals per step kind;
        - ``scales``.
    """

    if frames.dim() < 2 or frames.shape[0] < 2:
        raise ValueError(f"frames must be a clip [T, B, ...] with T >= 2, got shape {tuple(frames.shape)}")
    if isinstance(net_or_model, nn.Module) and not hasattr(net_or_model, "set_backend"):
        baseline = net_or_model.eval()
        net = convert(baseline, frames[0])
    else:
        net, baseline = net_or_model, original
    if scales is not None:
        net.set_scales(scales if isinstance(scales, Mapping) else {name: float(scales) for name in net.scales})

    # _measure switches counting and per-step counts: restored on the way out
    with torch_threads(threads), net.configured(counting=net.counting, per_step_counts=net.per_step_counts):
        return _measure(net, baseline, frames, threads, repeats, model, data, profile, dense_above, SIGMA_DELTA)


def _measure(net, baseline, frames, threads, repeats, model, data, profile, dense_above, sigma_delta) -> dict:
    timed = frames[1:]
    reference, counts = _reference(net, frames, sigma_delta)
    step_ops = {kind: counts.per_step(kind)[1:].sum() for kind in ("dense", "sigma_delta", "sigma_delta_muladd")}
    net.set_mode(sigma_delta).set_backend("sparse")
    engine = engine_of(net)
    if dense_above:
        engine.set_dense_above(**dense_above)
    out = net.run(frames)  # warm-up; builds the plan; also the output to compare
    max_abs, scale = (out - reference).abs().max().item(), reference.abs().max().item()
    per_frame = (out - reference).abs().flatten(1).amax(1)  # (T,)
    dense_times, sparse_times, first_times = _timings(net, baseline, frames, repeats, sigma_delta)
    paths = engine.paths()
    result = {
        "model": model or type(baseline or net).__name__,
        "data": data or f"{len(frames)} frames of shape {tuple(frames.shape[1:])}",
        "frames": len(timed),
        "threads": threads,
        "dense_ms_per_frame": 1e3 * statistics.median(dense_times),
        "sigma_delta_ms_per_frame": 1e3 * statistics.median(sparse_times),
        "speedup": statistics.median(dense_times) / statistics.median(sparse_times),
        "op_reduction": float(step_ops["dense"] / max(step_ops["sigma_delta"], 1.0)),
        "max_abs_diff": max_abs,
        "rel_max_abs_diff": max_abs / scale if scale > 0 else max_abs,
        "argmax_agreement": (out.argmax(-1) == reference.argmax(-1)).double().mean().item(),
        # frames beyond float32 precision: a flipped rounding upstream
        "frames_beyond_1e-4": int((per_frame > 1e-4 * scale).sum()),
        "op_reduction_muladd": float(step_ops["dense"] / max(step_ops["sigma_delta_muladd"], 1.0)),
        "speedup_paired": statistics.median(d / s for d, s in zip(dense_times, sparse_times)),
        "first_frame_ms": 1e3 * statistics.median(first_times),
        "memory": _memory(engine),
        "layer_paths": {name: {k: v / max(sum(p.values()), 1) for k, v in p.items()} for name, p in paths.items()},
        "layer_activity": engine.activity(),
        "scales": {name: (k if isinstance(k, float) else k.tolist()) for name, k in net.scales.items()},
    }
    if profile:
        result["profile"] = _profile(net, engine, frames)
    return result


def _reference(net, frames, sigma_delta):
    """The dense simulation's outputs and op counts (per step: the first frame is left out by the caller), in
    chunks: it stacks a clip's frames into one batch."""
    chunk = max(1, int(6e5 // max(frames[0].numel(), 1)))  # frames per dense-simulation call (memory)
    pieces = []
    with net.configured(backend="dense"):
        counts = run_stream(net, frames, (sigma_delta,), chunk=chunk, per_step_counts="total",
                            on_chunk=lambda _, out, nets: pieces.append(out[sigma_delta]))[sigma_delta]
    return torch.cat(pieces), counts


def _timings(net, baseline, frames, repeats, sigma_delta):
    """Per repeat, seconds per frame of the dense original (``baseline``, else the net in original mode) over the
    frames after the first, of the backend over the same frames, and of the backend's first frame (dense)."""
    timed = frames[1:]
    run_original = baseline if baseline is not None else net

    def dense_pass():
        if baseline is None:
            net.set_mode("original")
        with torch.inference_mode():
            for frame in timed:
                run_original(frame)

    net.counting = False
    dense_pass()  # warm-up
    dense_times, sparse_times, first_times = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        dense_pass()
        dense_times.append((time.perf_counter() - start) / len(timed))
        net.set_mode(sigma_delta)  # resets: a new stream
        start = time.perf_counter()
        net.run(frames[:1])
        first_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        net.run(timed)
        sparse_times.append((time.perf_counter() - start) / len(timed))
    return dense_times, sparse_times, first_times


def _memory(engine) -> dict:
    mem = engine.memory()
    weights = max(mem["weight_bytes"], 1)
    return {**mem, "state_over_weights": mem["state_bytes"] / weights,
            "state_and_plan_over_weights": (mem["state_bytes"] + mem["plan_bytes"]) / weights}


def _profile(net, engine, frames) -> dict:
    """Per step, the median time per frame over the timed frames, in µs, largest first; totals per step kind."""
    net.reset()
    engine.profile = True
    try:
        net.run(frames)
    finally:
        engine.profile = False
    kinds = {step.name: step.kind for step in engine.steps}
    per_step = {name: 1e6 * statistics.median(times[1:]) for name, times in engine.timings.items()}
    per_kind: dict[str, float] = {}
    for name, us in per_step.items():
        per_kind[kinds.get(name, "op")] = per_kind.get(kinds.get(name, "op"), 0.0) + us
    ordered = dict(sorted(per_step.items(), key=lambda kv: -kv[1]))
    return {"total_us": sum(per_step.values()), "per_kind_us": per_kind, "per_step_us": ordered}


def channels_last_ms(model: nn.Module, frames, threads: int, repeats: int) -> float:
    """The original network with channels-last weights and inputs (the layout the engine's dense convolutions use),
    ms per frame over ``frames`` (single frames ``[B, ...]``), median of ``repeats`` after one warm-up pass."""
    model = model.to(memory_format=torch.channels_last)
    frames = [f.contiguous(memory_format=torch.channels_last) for f in frames]
    times = []
    with torch_threads(threads), torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            for f in frames:
                model(f)
            if i:  # the first pass warms up
                times.append((time.perf_counter() - start) / len(frames))
    model.to(memory_format=torch.contiguous_format)
    return 1e3 * statistics.median(times)
