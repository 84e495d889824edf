"""What each ``sigmadelta`` command does (the parser and the error handling are in :mod:`sigmadelta.cli`).

Each ``*_command(args)`` takes the parsed arguments and returns the exit code; heavy modules load inside them,
so ``sigmadelta --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from sigmadelta.cli_schemes import (SCHEME_NAMES, apply_scheme, check_allocate_bands, finetune_scheme_settings,
                                    learn_scheme_param)
from sigmadelta.paper import EXPERIMENTS  # the names only: the experiments load on demand

__all__ = ["demo_command", "data_command", "run_command", "optimize_command", "finetune_command", "bench_command",
           "reproduce_command", "write_json", "SCHEME_NAMES"]


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically (a temporary file, then a rename: no half-written file), with the umask's permissions."""
    from sigmadelta._support import atomic_write

    atomic_write(Path(path), lambda tmp: _dump_json(tmp, data))


def _dump_json(path: str, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# demo


def demo_command(args) -> int:
    import torch

    import sigmadelta
    from sigmadelta.report import compare_networks, format_layer_table

    if args.synthetic:
        from sigmadelta.testing import correlated_stream, mlp

        torch.manual_seed(args.seed)
        model, labels = mlp((784, 200, 200, 10)), None
        clip = correlated_stream(args.frames, (784,), step_std=0.02, generator=torch.Generator().manual_seed(args.seed))
        what = (f"a randomly initialised 784-200-200-10 MLP on a synthetic, temporally correlated stream "
                f"({args.frames} steps), all scales k = 16")
        net = sigmadelta.convert(model, torch.zeros(1, 784))
        net.set_scales({name: 16.0 for name in net.scales})
    else:
        from sigmadelta import data, models

        model = models.get("mnist-mlp").model
        net = sigmadelta.convert(model, torch.zeros(1, 784))
        _learn_mlp_scales(net, _lam(args, "mnist-mlp"), args.calibrate)
        clip, labels = data.mnist_clip("test", temporal=True, max_frames=args.frames)
        labels = labels.unsqueeze(1)
        what = (f"the pre-trained 784-200-200-10 MNIST MLP on Temporal-MNIST test ({len(clip):,} frames, one stream), "
                f"scales learned with λ = {_lam(args, 'mnist-mlp'):g}: " + ", ".join(f"{k:.3g}" for k in net.scales.values()))
    print(f"\nsigmadelta demo: {what}\n")
    result = compare_networks(net, clip, labels)
    result["description"] = what
    print(format_layer_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# run and optimize: a pre-trained image model on any video


def _fail_early(args) -> None:
    """Before anything heavy loads (argparse checked the numbers): files exist, a scales file is for this model."""
    from sigmadelta import models
    from sigmadelta.data import CLIPS
    from sigmadelta.scales import ScalesError, read_scales_file

    if args.model is None:
        raise ValueError("--model is required")
    check_allocate_bands(args)
    if args.model not in models.names():
        raise models.UnknownNameError(f"unknown model {args.model!r}; the known models are {models.names()}")
    for attr, what in (("video", "video file"), ("weights", "weights file"), ("scales", "scales file")):
        path = getattr(args, attr, None)
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"no {what} {path}")
    clip = getattr(args, "calibrate", None)
    if clip is not None and clip not in CLIPS and not Path(clip).is_file():
        raise FileNotFoundError(f"--calibrate {clip!r} is neither a bundled clip ({', '.join(sorted(CLIPS))}) "
                                "nor a video file")
    if getattr(args, "scales", None) is not None:
        content = read_scales_file(args.scales)
        if content["model"] != args.model:
            raise ScalesError(f"{args.scales} holds scales for model {content['model']!r}, not {args.model!r}")
        args.per_channel_scales = any(isinstance(k, list) for k in content["scales"].values())


def _image_net(args):
    """The bundle and its converted network; refuses models that do not take RGB frames."""
    from sigmadelta import models

    bundle = models.get(args.model, weights=args.weights)
    if len(bundle.input_shape) != 3 or bundle.input_shape[0] != 3:
        raise ValueError(f"model {args.model!r} takes inputs {bundle.input_shape}, not RGB video frames; "
                         "choose an image model (efficientnet-lite0, vgg19)")
    return bundle, _converted(args, bundle)


def _converted(args, bundle):
    """The model converted as its scales file or checkpoint needs: per channel if its scales are."""
    import sigmadelta

    return sigmadelta.convert(bundle.model, bundle.example_input(),
                              per_channel_scales=getattr(args, "per_channel_scales", False))


def _lam(args, model: str) -> float:
    """``--lam``, else the λ that goes with ``--scheme``'s default parameter, else the model's default λ."""
    from sigmadelta.scales import default_lam, default_scheme_setting

    if args.lam is not None:
        return args.lam
    scheme = getattr(args, "scheme", None)
    use_default = scheme is not None and getattr(args, "scheme_param", None) is None
    return default_scheme_setting(model, scheme)[1] if use_default else default_lam(model)


def _learn_mlp_scales(net, lam: float, images: int):
    """An MNIST MLP's scales, learned as the demo does (seconds): :data:`sigmadelta.config.DEMO_MLP`."""
    import sigmadelta
    from sigmadelta import data
    from sigmadelta.config import DEMO_MLP

    config = DEMO_MLP.replace(lam=lam)
    train, _ = data.mnist_clip("train", temporal=False, max_frames=images)
    print(f"learning the scales: λ = {config.lam:g}, {config.epochs} epoch over the first {len(train):,} training "
          f"images ({config.error} error, SGD lr {config.lr:g}, batch {config.batch_size})")
    return sigmadelta.optimize_scales(net, train[:, 0], config=config, eval_data=train[:1000, 0], num_threads=1)


def _calibrate(args, bundle, net):
    """Learn (or read from the cache) scales on a training clip; returns the Calibration."""
    from sigmadelta import data
    from sigmadelta._support import process_rank_and_count
    from sigmadelta.scales import calibrate, video_config

    config = video_config(args.model).replace(lam=_lam(args, args.model), lr=args.lr, epochs=args.epochs,
                                              batch_size=args.calibrate_batch)
    clip = args.calibrate or "carphone"
    frames = data.load_clip(clip, bundle, max_frames=args.calibrate_frames)
    print(f"scales: λ = {config.lam:g}, learned on {clip} ({len(frames)} frames; rounding network, batch "
          f"{config.batch_size}, SGD lr {config.lr:g}, {config.epochs} epochs, {config.error} error, from "
          f"k = {config.init_scale:g}), cached in the user cache")
    result = calibrate(net, frames, config.lam, model=args.model, clip=str(clip), config=config,
                       progress=process_rank_and_count()[0] == 0)  # under torchrun the first process reports
    print("  read from the cache: " if result.cached else "  saved to the cache: ", result.path, sep="")
    return result


def _run_summary(ev, seconds: float, scheme: dict) -> dict:
    """The summary of `run --json`: both conventions for the delta network's ops, and the scheme that ran."""
    summary = ev.summary()
    keys = ("ops_original_per_frame", "ops_sigma_delta_per_frame", "reduction", "top1_agreement", "top5_agreement")
    return {k: summary[k] for k in keys} | {
        "scheme": scheme, "ops_rounding_per_frame": summary["ops_rounding_per_frame"],
        "ops_sigma_delta_events_per_frame": summary["ops_sigma_delta_events_per_frame"],
        "reduction_additions": summary["reduction_additions"], "reduction_events": summary["reduction_events"],
        "conventions": {"additions": "the paper's: |n| additions per message n and connection (ops.sigma_delta)",
                        "events": "2 ops per nonzero message and connection, as the dense original (ops.events)"},
        "energy_nj_per_frame_int32": summary["energy_nj_per_frame"], "frames": ev.frames, "seconds": seconds}


def run_command(args) -> int:
    import time

    import numpy as np
    import torch

    from sigmadelta import data
    from sigmadelta import evaluation as video
    from sigmadelta._support import atomic_write_all
    from sigmadelta.scales import apply_scales

    _model_of_checkpoint(args)
    _fail_early(args)
    start = time.perf_counter()
    frames = data.read_video(args.video, args.frames, strict=args.strict)  # opened and probed now, decoded lazily
    bundle, net = _image_net(args)
    reference = None
    if args.checkpoint:
        reference, source = _apply_checkpoint(args, net)
    elif args.scales:
        meta = apply_scales(net, args.scales, args.model)
        source = {"scales_file": str(args.scales), "lam": meta.get("lam"), "config": meta.get("config")}
        print(f"scales: {args.scales}" + (f" (λ = {meta['lam']:g})" if "lam" in meta else ""))
    else:
        result = _calibrate(args, bundle, net)
        source = {"calibrated_on": str(args.calibrate or "carphone"), "lam": result.lam, "cache_file": str(result.path),
                  "config": result.meta.get("config")}

    def chunks():  # decode and preprocess lazily: any length of video in bounded memory
        pending = []
        for frame in frames:
            pending.append(frame)
            if len(pending) == args.chunk:
                yield bundle.preprocess(np.stack(pending)).unsqueeze(1)  # (t, 1, 3, H, W)
                pending = []
        if pending:
            yield bundle.preprocess(np.stack(pending)).unsqueeze(1)

    scheme = apply_scheme(args, bundle, net)
    net.set_delta_dtype(torch.float64 if args.exact else net.dtype)  # the model's dtype: about 2x faster
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.VideoWarning)  # said below, once, in the command's words
        ev = video.evaluate_stream(net, chunks(), total=args.frames, desc=Path(args.video).name, per_layer=False,
                                   reference=reference)
    seconds = time.perf_counter() - start
    report = {"model": args.model, "video": str(args.video), "scales": source, **_video_facts(args, frames),
              "frames": ev.frame_rows(), "summary": _run_summary(ev, seconds, scheme)}
    print(video.format_summary(ev, bundle.classes, title=f"{args.model} on {args.video}"))
    print(f"({seconds:.0f} s)")
    writes = {}  # all or none: rendered first, then moved into place together
    if args.json:
        writes[Path(args.json)] = lambda tmp: _dump_json(tmp, report)
    if args.plot:
        fig = video.stream_figure(ev, title=f"{args.model} on {Path(args.video).name}")
        writes[Path(args.plot)] = lambda tmp: video.save_figure(fig, tmp, Path(args.plot).suffix)
    for path in atomic_write_all(writes):
        print(f"wrote {path}")
    return 0


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


def optimize_command(args) -> int:
    from sigmadelta._support import quiet_unless_first_process
    from sigmadelta.finetune import init_distributed
    from sigmadelta.scales import save_scales

    _fail_early(args)
    if args.learn_scheme_param is not None and args.scheme not in ("hysteresis", "threshold"):
        raise ValueError("--learn-scheme-param learns h or θ per quantizer: give --scheme hysteresis or threshold")
    rank, _ = init_distributed()
    quiet_unless_first_process()
    bundle, net = _image_net(args)
    result = _calibrate(args, bundle, net)
    apply_scheme(args, bundle, net)
    if rank:  # under torchrun the first process learns the scheme's parameter (no collectives) and writes
        return 0
    if args.learn_scheme_param is not None:
        result.meta["scheme_search"] = learn_scheme_param(args, bundle, net)
    save_scales(args.output, net, args.model, result.meta)
    print("  " + ", ".join(f"{name}: " + (f"{k:.3g}" if isinstance(k, float) else f"{k.min():.3g}..{k.max():.3g}")
                           for name, k in list(net.scales.items())[:6])
          + (f", ... ({len(net.scales)} scales)" if len(net.scales) > 6 else ""))
    print(f"wrote {args.output}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# finetune, and networks from a checkpoint


def _model_of_checkpoint(args) -> None:
    """With ``--checkpoint``, the model is the one the file names (``--model`` may be left out)."""
    if getattr(args, "checkpoint", None) is None:
        if args.model is None:
            raise ValueError("--model is required (or --checkpoint FILE, which names its model)")
        return
    from sigmadelta.checkpoints import FinetuneError, load_checkpoint

    content = load_checkpoint(args.checkpoint)
    found = content["model"]
    if args.model is not None and args.model != found:
        raise FinetuneError(f"{args.checkpoint} is a checkpoint of model {found!r}, not {args.model!r}")
    args.model = found
    args.per_channel_scales = any(t.dim() > 0 for t in content["log_scales"].values())  # (C, 1, 1), not ()


def _apply_checkpoint(args, net):
    """Load the checkpoint into ``net``; returns (an unmodified copy of the converted original, a record)."""
    import copy

    from sigmadelta.checkpoints import apply_checkpoint

    reference = copy.deepcopy(net)  # the original, for agreement: fine-tuning changed the net's own weights
    ck = apply_checkpoint(net, args.checkpoint, args.model)
    print(f"checkpoint: {args.checkpoint} (λ = {ck['lam']:g}, {ck['steps_done']} steps)")
    return reference, {"checkpoint": str(args.checkpoint), "lam": ck["lam"], "steps": ck["steps_done"]}


def finetune_command(args) -> int:
    import torch

    from sigmadelta import finetune as ft
    from sigmadelta._support import quiet_unless_first_process

    _fail_early(args)
    rank, world = ft.init_distributed()
    quiet_unless_first_process()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = ft.default_config(args.model).replace(**finetune_scheme_settings(args), **{k: v for k, v in (
        ("steps", args.steps), ("batch", args.batch), ("window", args.window), ("seed", args.seed),
        ("cost", args.cost)) if v is not None})
    bundle, net = _image_net(args) if args.model not in ft.MLP_MODELS else _mlp_net(args)
    if args.scales:
        from sigmadelta.scales import apply_scales

        apply_scales(net, args.scales, args.model)
    elif args.model not in ft.MLP_MODELS:  # scales from the paper's calibration at the model's default λ
        lam, args.lam = args.lam, None
        _calibrate(args, bundle, net)
        args.lam = lam
    clips, names = ft.training_clips(args.model, bundle, args.train)
    lam = ft.default_lam(args.model) if args.lam is None else args.lam
    print(f"fine-tuning {args.model}: λ = {lam:g}, {config.steps} steps of {config.batch} windows x "
          f"{config.window} frames on {len(clips)} clips ({sum(len(c) for c in clips)} frames: {names}), "
          f"{world} process(es)")
    result = ft.finetune_cached(net, clips, lam, config, model=args.model, output=args.output,
                                meta={"train": names}, progress=rank == 0)
    print(("  read from the cache: " if result.cached else "wrote ") + str(result.path)
          + f" ({result.record['seconds']:.0f} s of training)")
    return 0


def _mlp_net(args):
    import torch

    import sigmadelta
    from sigmadelta import models

    bundle = models.get(args.model)
    return bundle, sigmadelta.convert(bundle.model, torch.zeros(1, *bundle.input_shape))


# ---------------------------------------------------------------------------------------------------------
# data and experiments


def data_command(args) -> int:
    from sigmadelta import data, models

    entries = data.catalog() + models.catalog()
    if args.json:
        write_json(args.json, entries)
    width = max(len(e["name"]) for e in entries)
    for e in entries:
        mark = "yes" if e["present"] else "no "
        print(f"{e['kind']:<8} {e['name']:<{width}}  present: {mark}  {e['source']}")
    return 0


def reproduce_command(args) -> int:
    import importlib


    experiment = importlib.import_module(f"sigmadelta.paper.{EXPERIMENTS[args.experiment]}")
    argv = (["--out", str(args.out)] if args.out else []) + (["--quick"] if args.quick else [])
    if args.model is not None:
        if args.experiment != "video":
            raise ValueError(f"--model applies to `reproduce video` only, not {args.experiment!r}")
        argv += ["--model", args.model]
    experiment.main(argv)
    return 0


def bench_command(args) -> int:
    from sigmadelta import data, models
    from sigmadelta.runtime.bench import benchmark
    from sigmadelta.scales import apply_scales

    _model_of_checkpoint(args)
    _fail_early(args)
    bundle = models.get(args.model, weights=args.weights)
    net = _converted(args, bundle)
    if args.data in ("mnist", "temporal-mnist"):
        if bundle.input_shape != (784,):
            raise ValueError(f"--data {args.data} is for the MNIST MLPs, not {args.model!r}")
        frames, _ = data.mnist_clip("test", temporal=args.data == "temporal-mnist", max_frames=args.frames)
    else:
        frames = data.load_clip(args.data, bundle, max_frames=args.frames)  # (T, 1, ...)
    if args.checkpoint:
        _apply_checkpoint(args, net)
    elif args.scales:
        apply_scales(net, args.scales, args.model)
    elif bundle.input_shape == (784,):  # an MNIST MLP: learn its scales as the demo does (seconds)
        _learn_mlp_scales(net, _lam(args, args.model), 10_000)
    else:
        args.calibrate = None
        _calibrate(args, bundle, net)
    # an MNIST MLP measures σ (thresholds) and the bands' statistics on training images, not the timed ones
    if (args.scheme == "threshold" or args.allocate_bands) and bundle.input_shape == (784,):
        apply_scheme(args, bundle, net, calibration=data.mnist_clip("train", temporal=False, max_frames=1000)[0])
    else:
        apply_scheme(args, bundle, net)
    print(f"scheme {net.scheme}; timing {args.model} on {args.data}: {len(frames)} frames, {args.threads} thread(s), "
          f"{args.repeats} repeats, dense original vs sparse sigma-delta backend")
    result = benchmark(net, frames, threads=args.threads, repeats=args.repeats, original=bundle.model,
                       model=args.model, data=str(args.data))
    result["scheme"] = {"name": net.scheme, "params": net.scheme_params}
    print(f"dense {result['dense_ms_per_frame']:.2f} ms/frame, sigma-delta (sparse, {net.scheme}) "
          f"{result['sigma_delta_ms_per_frame']:.2f} ms/frame: speed-up {result['speedup']:.2f}x; "
          f"fewer ops {result['op_reduction']:.1f}x (additions), {result['op_reduction_muladd']:.1f}x (events); "
          f"max |sparse - simulation| {result['max_abs_diff']:.2e}")
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
