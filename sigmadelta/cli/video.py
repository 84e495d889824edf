"""The commands that build a network from a model: ``run``, ``optimize``, ``finetune`` and ``bench``.

Each ``*_command(args)`` first plans everything it will do from its arguments (:func:`~.setup.plan_net` and the
checks here: files, clips, combinations), then does the work and returns the exit code. Heavy modules load inside.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from ..errors import UsageError
from .setup import build_net, check_clip, check_file, plan_net

__all__ = ["run_command", "optimize_command", "finetune_command", "bench_command"]


# ---------------------------------------------------------------------------------------------------------
# run


def run_command(args) -> int:
    import numpy as np

    from .. import data
    from .._utils.files import atomic_write_all, write_json
    from ..eval.plots import save_figure, stream_figure
    from ..eval.report import format_summary
    from ..eval.decisive import grey_level
    from ..eval.video import evaluate_stream

    plan = plan_net(args, kinds=("image",), float64=args.exact)
    check_file(args.video, "video file")
    start = time.perf_counter()
    frames = data.read_video(args.video, args.frames, strict=args.strict)  # opened and probed now, decoded lazily
    built = build_net(plan)
    bundle, net = built.bundle, built.net

    def chunks():  # decode and preprocess lazily: any length of video in bounded memory
        pending = []
        for frame in frames:
            pending.append(frame)
            if len(pending) == args.chunk:
                yield bundle.preprocess(np.stack(pending)).unsqueeze(1).to(net.dtype)  # (t, 1, 3, H, W)
                pending = []
        if pending:
            yield bundle.preprocess(np.stack(pending)).unsqueeze(1).to(net.dtype)

    net.set_delta_dtype(net.dtype)  # float32: about 2x faster than float64 increments; --exact: all float64
    net.set_backend(args.backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.VideoWarning)  # said below, once, in the command's words
        ev = evaluate_stream(net, chunks(), total=args.frames, desc=Path(args.video).name, per_layer=False,
                             reference=built.reference, grey=grey_level(bundle))
    seconds = time.perf_counter() - start
    if net.engine is not None:  # the plan and the compiled kernels (numba caches them in the user cache)
        print(f"{args.backend} engine: plan built and kernels loaded in {net.engine.build_seconds:.1f} s")
    report = {"model": plan.model, "video": str(args.video), "scales": built.record, **_video_facts(args, frames),
              "frames": ev.frame_rows(bundle.classes), "summary": _run_summary(ev, seconds, built.record["scheme"])}
    print(format_summary(ev, bundle.classes, title=f"{plan.model} on {args.video}"))
    print(f"({seconds:.0f} s)")
    writes = {}  # all or none: rendered first, then moved into place together
    if args.json:
        writes[Path(args.json)] = lambda tmp: write_json(tmp, report)
    if args.plot:
        fig = stream_figure(ev, title=f"{plan.model} on {Path(args.video).name}")
        writes[Path(args.plot)] = lambda tmp: save_figure(fig, tmp, Path(args.plot).suffix)
    for path in atomic_write_all(writes):
        print(f"wrote {path}")
    return 0


def _run_summary(ev, seconds: float, scheme: dict) -> dict:
    """The summary of `run --json`: both conventions for the delta network's ops, the scheme that ran, what a user
    compares it with (decisive frames, the frame skipper at the same ops, change latency; their definitions under
    ``definitions``) and the frame skipper's curve."""
    from ..eval.decisive import DECISIVE
    from ..eval.video import CHANGE_RUN

    return ev.summary() | {
        "scheme": scheme, "seconds": seconds,
        "frame_skip_curve": ev.frame_skip_curve(periods=range(2, 101)),
        "conventions": {"additions": "the paper's: |n| additions per message n and connection (ops.sigma_delta)",
                        "events": "2 ops per nonzero message and connection, as the dense original (ops.events)"},
        "definitions": {
            "decisive": f"the original's top-1 survives uniform input noise of ±{DECISIVE['level']:g} grey levels "
                        f"in each of {DECISIVE['draws']} seeded draws (frames.original.decisive)",
            "frame_skip": "the original on frames 0, n, 2n, ..., its answer held; n = floor(original ops / the "
                          "delta network's ops in that convention), so the skipper spends at least as much",
            "change_latency": f"per change of the original's top-1 that stays {CHANGE_RUN} frames: frames until the "
                              f"network shows the new class (a change never followed counts its whole run), "
                              f"top-1 agreement on the {CHANGE_RUN} frames from the change"}}


def _video_facts(args, frames) -> dict:
    """What `run` read of the video, for the JSON; warns (stderr) of a truncated file or fewer frames than asked."""
    facts = {"frames_read": frames.frames_read, "truncated": frames.truncated, "still_image": frames.still_image}
    if frames.truncated:
        facts["video_warning"] = frames.problem
        print(f"sigmadelta run: warning: {frames.problem} (--strict makes this an error)", file=sys.stderr)
    if args.frames is not None and frames.frames_read < args.frames:
        what = "a still image: 1 frame" if frames.still_image else f"{frames.frames_read} frames"
        print(f"sigmadelta run: warning: {args.video} holds {what}, fewer than the {args.frames} asked for "
              f"(--frames {args.frames})", file=sys.stderr)
    elif frames.still_image:
        print(f"sigmadelta run: note: {args.video} is a still image, run as a one-frame video", file=sys.stderr)
    return facts


# ---------------------------------------------------------------------------------------------------------
# optimize

# `optimize --learn-scheme-param`: the frames searched on and the values tried (h in levels; θ as multiples of the θ
# set, τ·σ of each layer's input), as `python -m sigmadelta.paper.learned_h` measured them
SEARCH_FRAMES, SEARCH_VALUES = 40, (0.5, 1.0, 2.0, 3.0, 4.0)


def optimize_command(args) -> int:
    from .._utils.distributed import init_distributed, quiet_unless_first_process
    from ..files.scales import save_scales

    if args.learn_scheme_param is not None and args.scheme not in ("hysteresis", "threshold"):
        raise UsageError("--learn-scheme-param learns h or θ per quantizer: give --scheme hysteresis or threshold")
    plan = plan_net(args, kinds=("image",))
    rank, _ = init_distributed()
    quiet_unless_first_process()
    built = build_net(plan)
    if rank:  # under torchrun the first process learns the scheme's parameter (no collectives) and writes
        return 0
    meta = dict(built.record)
    if args.learn_scheme_param is not None:
        meta["scheme_search"] = _learn_scheme_param(args, plan, built)
    save_scales(args.output, built.net, plan.model, meta)
    scales = built.net.scales
    print("  " + ", ".join(f"{name}: " + (f"{k:.3g}" if isinstance(k, float) else f"{k.min():.3g}..{k.max():.3g}")
                           for name, k in list(scales.items())[:6])
          + (f", ... ({len(scales)} scales)" if len(scales) > 6 else ""))
    print(f"wrote {args.output}")
    return 0


def _learn_scheme_param(args, plan, built) -> dict:
    """Learn the scheme's parameter per quantizer (:func:`sigmadelta.learn_scheme_params`) on the first frames of
    the calibration clip at trade-off ``--learn-scheme-param`` per event, from the parameter set; returns a record."""
    from .. import data, learn_scheme_params

    net, clip = built.net, plan.scales.clip
    frames = data.load_clip(clip, built.bundle, max_frames=min(SEARCH_FRAMES, args.calibrate_frames or SEARCH_FRAMES))
    start = net.scheme_params
    unit = {name: 1.0 if args.scheme == "hysteresis" else theta for name, theta in start.items()}
    print(f"learning {args.scheme}'s parameter per quantizer on {clip} ({len(frames)} frames), λ = "
          f"{args.learn_scheme_param:g} per event")
    search = learn_scheme_params(net, frames, args.learn_scheme_param, scheme=args.scheme, start=start,
                                 candidates={name: [v * u for v in SEARCH_VALUES] for name, u in unit.items()})
    values = sorted(search.params.values())
    print(f"  {len(values)} quantizers, {'h' if args.scheme == 'hysteresis' else 'θ'} {values[0]:.3g} .. "
          f"{values[-1]:.3g}; on those frames error {search.error:.3g}, {search.ops:.4g} event ops per frame")
    return dict(lam=args.learn_scheme_param, clip=str(clip), frames=len(frames), error=search.error,
                event_ops_per_frame=search.ops, values=list(SEARCH_VALUES))


# ---------------------------------------------------------------------------------------------------------
# finetune


def finetune_command(args) -> int:
    import torch

    from .. import recipes
    from .._utils.distributed import init_distributed, quiet_unless_first_process
    from ..config import SchemeConfig
    from ..learn.finetune import finetune_cached, training_clips

    scheme = _finetune_scheme(args)
    plan = plan_net(args, lam=_starting_lam(args, scheme), with_scheme=False)  # finetune sets the scheme trained
    if plan.kind == "mnist" and args.train:
        raise UsageError(f"--train: {plan.model} trains on Temporal-MNIST's training split, not on clips")
    for clip in args.train or ():
        if clip != "synthetic":
            check_clip(clip, "--train")
    changes = {k: v for k, v in (("steps", args.steps), ("batch", args.batch), ("window", args.window),
                                 ("seed", args.seed), ("surrogate", args.surrogate)) if v is not None}
    config = recipes.finetune_config(plan.model).replace(
        **changes, **({} if scheme is None else {"scheme": recipes.scheme_config(plan.model, *scheme)
                                                 if scheme[0] == "hysteresis" else SchemeConfig()}))
    lam = recipes.finetune_lam(plan.model) if args.lam is None else args.lam
    rank, world = init_distributed()
    quiet_unless_first_process()
    if args.threads:
        torch.set_num_threads(args.threads)
    built = build_net(plan)
    clips, names = training_clips(built.bundle, args.train)
    print(f"fine-tuning {plan.model}: λ = {lam:g}, {config.steps} steps of {config.batch} windows x "
          f"{config.window} frames on {len(clips)} clips ({sum(len(c) for c in clips)} frames: {names}), scheme "
          f"{config.scheme.describe()}, {world} process(es)")
    result = finetune_cached(built.net, clips, lam, config, model=plan.model, output=args.output,
                             meta={"train": names}, progress=rank == 0)
    print(("  read from the cache: " if result.cached else "wrote ") + str(result.path)
          + f" ({result.record['seconds']:.0f} s of training)")
    return 0


def _finetune_scheme(args) -> tuple | None:
    """``(name, h, allocate)`` of `finetune`'s ``--scheme`` options, checked (``None``: the recipe's scheme)."""
    if args.scheme is None:
        if args.scheme_param is not None or args.allocate_bands:
            raise UsageError(f"{'--scheme-param' if args.scheme_param is not None else '--allocate-bands'} is for "
                             "--scheme hysteresis; give it")
        return None
    if args.scheme == "sigma-delta" and (args.scheme_param is not None or args.allocate_bands):
        raise UsageError("--scheme-param and --allocate-bands are for --scheme hysteresis; the sigma-delta scheme "
                         "has no parameter")
    return args.scheme, args.scheme_param, args.allocate_bands


def _starting_lam(args, scheme) -> float | None:
    """The λ of the starting scales: ``--scales-lam``, else the one hysteresis's default h goes with, else the
    model's (``None``: let the plan decide)."""
    from .. import recipes

    if args.scales_lam is not None:
        return args.scales_lam
    if scheme is not None and scheme[0] == "hysteresis" and scheme[1] is None and args.model is not None:
        return recipes.scheme_setting(args.model, "hysteresis")[1]
    return recipes.scale_lam(args.model) if args.model is not None else None


# ---------------------------------------------------------------------------------------------------------
# bench


def bench_command(args) -> int:
    import os

    import torch

    from .. import data
    from .._utils.files import write_json
    from ..eval.timing import benchmark

    if args.frames < 3:
        raise UsageError(f"--frames {args.frames}: bench needs at least 3 frames (the first runs densely, the "
                         "others are timed)")
    plan = plan_net(args)
    if args.data in ("mnist", "temporal-mnist"):
        if plan.kind != "mnist":
            raise UsageError(f"--data {args.data} is for the MNIST MLPs, not {plan.model!r}")
    elif plan.kind == "mnist":
        raise UsageError(f"--data: {plan.model} takes MNIST digits: give --data temporal-mnist or mnist")
    else:
        check_clip(args.data, "--data")
    stride = max(1, args.frames // args.streams)
    needed = args.frames + (args.streams - 1) * stride
    known = data.CLIPS[args.data].frames if args.data in data.CLIPS else None
    if known is not None and known < needed:
        raise UsageError(f"--data {args.data} has {known} frames: too few for {args.streams} streams of "
                         f"--frames {args.frames} (it needs {needed}; give fewer frames or streams)")
    if args.threads > 1 and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print("note: with several threads on a shared machine, set OMP_WAIT_POLICY=PASSIVE before starting (torch's "
              "OpenMP workers spin otherwise, and slow every side)", file=sys.stderr)
    built = build_net(plan)
    if plan.kind == "mnist":
        clip, _ = data.mnist_clip("test", temporal=args.data == "temporal-mnist", max_frames=needed)
    else:
        clip = data.load_clip(args.data, built.bundle, max_frames=needed)  # (T, 1, ...)
    if len(clip) < needed:
        raise UsageError(f"--data {args.data} has {len(clip)} frames: too few for {args.streams} streams of "
                         f"--frames {args.frames}")
    frames = torch.cat([clip[b * stride:b * stride + args.frames] for b in range(args.streams)], 1)  # (T, B, ...)
    net = built.net
    print(f"scheme {net.scheme_config.describe()}; timing {plan.model} on {args.data}: {args.streams} stream(s) of "
          f"{args.frames} frames, {args.threads} thread(s), {args.repeats} repeats: the event engine against the "
          "original, NCHW and channels-last")
    meta = {"model": plan.model, "data": str(args.data), "command": args.command_line,
            "scales_record": {k: v for k, v in built.record.items() if k != "scheme"}}
    result = benchmark(net, frames, original=built.bundle.model, threads=args.threads, repeats=args.repeats,
                       policy=args.policy, meta=meta)
    ms = result["ms_per_frame"]
    print(f"ms per frame: original {ms['nchw']:.2f} (NCHW), {ms['channels_last']:.2f} (channels-last); event engine "
          f"{ms['engine']:.2f}: speed-up {result['speedup']:.2f}x against the faster ({result['speedup_nchw']:.2f}x "
          f"against NCHW); {result['events_ratio']:.1f}x fewer events, efficiency {result['efficiency']:.2f}")
    agree = result["top1_agreement"]
    print(f"top-1 agreement with the original: engine {agree['engine']:.1%}, the original on every "
          f"{result['frame_skipping_every']}-th frame (the same wall-clock) {agree['frame_skipping']:.1%}; "
          f"max |engine - simulation| {result['rel_max_abs_diff']:.1e} of the output scale; plan built in "
          f"{result['build_seconds']:.1f} s")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
