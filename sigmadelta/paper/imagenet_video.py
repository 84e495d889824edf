"""Figures 5 and 6 of O'Connor & Welling (2017) on a real pre-trained CNN and real clips: how much less a Sigma-Delta
network computes on video than the original, how often it agrees with it, and what each layer costs.

    python -m sigmadelta.paper.imagenet_video [--out DIR] [--quick] [--model NAME] [--weights FILE]
    sigmadelta reproduce video [--out DIR] [--quick] [--model NAME]

Protocol (paper-notes 6 and 7.3): scales learned on a training clip (carphone, all 120 frames) as a Rounding
network, one frame per minibatch, plain SGD lr 0.1, 5 epochs, L2 error on the softmax probabilities against the
original's (no labels), paper normalization; then one test stream, a static shot (bigbuckbunny, 100 frames)
followed by a moving camera (bikes, 100 frames), spliced with no reset, run as the Sigma-Delta network. Agreement is
with the original network: top-1 (same argmax) and top-5 (the Sigma-Delta argmax is in the original's top 5).

One change to the paper's protocol: scales start at k = 16, not 1. The paper's k = 1 was for VGG-19 on 0-255 pixels
(256 levels); EfficientNet's inputs are in [-1, 1], where k = 1 leaves 3 levels, no frame agrees with the original
and the L2 error on probabilities has no gradient left to climb back. SqueezeNet takes 0-255 pixels (minus the
mean), like the paper's VGG, and starts at the paper's k = 1 (:data:`sigmadelta.recipes.INIT_SCALES`).

λ is swept (all values trained at once) to draw the trade-off curve; the default λ is the model's
(:func:`sigmadelta.recipes.scale_lam`), read off that curve. Uniform scales (k the same everywhere) are evaluated
for reference. The Sigma-Delta network computes its increments in float32 here, the model's dtype (about 2x faster
than the default float64; both differ from the Rounding network only by rare rounding-boundary flips); the speed
section times both against a dense PyTorch pass.

Writes ``video_fig5.png``, ``video_fig6.png``, ``video_tradeoff.png``, ``frames.csv`` (per frame, default λ),
``results.json`` and ``results.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import sigmadelta
from sigmadelta.paper import default_out
from sigmadelta import data, models, recipes
from sigmadelta.learn.calibrate import calibrate_sweep
from sigmadelta.eval.video import evaluate_stream
from sigmadelta.paper.video_figures import plot_fig5, plot_fig6, plot_tradeoff, short_class

# --- defaults (the paper's settings, except the initial scale: see the docstring)
MODEL = "efficientnet-lite0"
TRAIN_CLIP, TRAIN_FRAMES = "carphone", None  # None: all frames
TEST_CLIPS = (("bigbuckbunny", 100), ("bikes", 100))  # static shot, then moving camera: 200 frames (paper: 201)
SCALES = recipes.PAPER_VIDEO  # the paper's recipe: L2 on softmax probabilities, SGD lr 0.1, 5 epochs, batch 1, from k = 16
LAMS = (3e-11, 1e-10, 2e-10, 5e-10, 1e-9, 3e-9)
# a model whose curve needs other points to bracket the target (SqueezeNet's top-5 falls between 1e-10 and 1e-9)
MODEL_LAMS = {"squeezenet1_1": (1e-11, 3e-11, 5e-11, 7e-11, 1e-10, 2e-10, 3e-10, 5e-10, 1e-9)}
UNIFORM = (16.0, 32.0)  # naive uniform scales, for reference
MODEL_UNIFORM = {"squeezenet1_1": (0.5, 1.0)}  # 0-255 inputs: k = 16 is 50x the original's cost
SPEED_FRAMES = 16
CHUNK = 20  # frames per clip-mode call (memory only)
QUICK = dict(train_frames=6, test_frames=(8, 8), epochs=1, lams=None, uniform=(16.0,), speed_frames=4)
TARGET = dict(static=11.0, moving=4.0, top1=0.90, top5=0.98)  # the paper's VGG-19 reductions, the agreement aimed at
OUT = default_out("video")  # EfficientNet-Lite0's; another model's results go to video_<model> (results_dir)


def results_dir(model: str) -> Path:
    """The default output folder for ``model``: ``video`` for the default model, else ``video_<model>``."""
    return OUT if model == MODEL else default_out(f"video_{model}")


def load_stream(bundle, clips) -> tuple[torch.Tensor, list[tuple[str, int, int]]]:
    """The test stream ``[T, 1, 3, H, W]`` and its segments ``(clip, start, stop)``."""
    parts, segments, start = [], [], 0
    for name, frames in clips:
        clip = data.load_clip(name, bundle, max_frames=frames)
        parts.append(clip)
        segments.append((name, start, start + len(clip)))
        start += len(clip)
    return torch.cat(parts), segments


def point(ev, segments, label: str, lam, scales=None) -> dict:
    """One point of the trade-off curve: per segment (and the whole stream) reduction and agreement."""
    row = dict(label=label, lam=lam, scales=scales)
    for name, a, b in segments:
        s = ev.summary(a, b)
        row[name] = {k: s[k] for k in ("ops_sigma_delta_per_frame", "ops_rounding_per_frame", "reduction",
                                       "reduction_rounding", "reduction_hybrid", "top1_agreement", "top5_agreement")}
    s = ev.summary()
    row["all"] = {k: s[k] for k in ("ops_sigma_delta_per_frame", "reduction", "reduction_hybrid", "top1_agreement",
                                    "top5_agreement")}
    return row


def time_speed(net, bundle, frames: torch.Tensor) -> dict:
    """Seconds for ``frames`` ``[T, 1, ...]``: a dense PyTorch pass (inference_mode) against the Sigma-Delta
    simulation in clip mode with op counting on, increments in float64 and in float32, same threads."""

    def best_of(fn, repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        bundle.model(frames[:1, 0])  # warm-up
        dense = best_of(lambda: bundle.model(frames[:, 0]), 2)
    with torch.no_grad():
        with net.configured(mode="original", counting=True):
            original = best_of(lambda: (net.reset(), net.run(frames)), 1)
        with net.configured(mode="sigma-delta", counting=True, delta_dtype=net.dtype):
            fast = best_of(lambda: (net.reset(), net.run(frames)), 1)
        with net.configured(mode="sigma-delta", counting=True, delta_dtype=torch.float64):
            exact = best_of(lambda: (net.reset(), net.run(frames)), 1)
    n = len(frames)
    return dict(frames=n, threads=torch.get_num_threads(), dense_s_per_frame=dense / n,
                original_mode_s_per_frame=original / n, sigma_delta_float64_s_per_frame=exact / n,
                sigma_delta_float32_s_per_frame=fast / n, ratio_float64=exact / dense, ratio_float32=fast / dense)


def evaluate_all(net, calibrations, uniform_scales, stream, segments, lam0: float, progress: bool):
    """Every λ's and every uniform scale's point of the curve; the default λ's evaluation and scales."""
    curve, uniform, default_ev, default_scales = [], [], None, None
    for cal in calibrations:
        net.set_scales(cal.scales)
        ev = evaluate_stream(net, stream, chunk=CHUNK, progress=progress, feature_distances=cal.lam == lam0,
                             desc=f"λ = {cal.lam:g}")
        curve.append(point(ev, segments, f"λ = {cal.lam:g}", cal.lam, cal.scales))
        if cal.lam == lam0:
            default_ev, default_scales = ev, dict(cal.scales)
    for k in uniform_scales:
        net.set_scales({name: k for name in net.scales})
        ev = evaluate_stream(net, stream, chunk=CHUNK, progress=progress, desc=f"uniform k = {k:g}")
        uniform.append(point(ev, segments, f"uniform k = {k:g}", None, k))
    return curve, uniform, default_ev, default_scales


def default_result(ev, segments, lam0: float, scales: dict) -> dict:
    """The default λ's part of results.json: summaries per segment (also without the stream's first frame), layers."""
    return dict(lam=lam0, scales=scales, summary={name: ev.summary(a, b) for name, a, b in segments},
                steady={name: ev.summary(max(a, 1), b) for name, a, b in segments},
                layers={name: ev.layer_summary(max(a, 1), b) for name, a, b in segments},
                first_frame_ops={n: float(ev.ops[n][0]) for n in ("original", "rounding", "sigma_delta")})


def settings(model: str, quick: bool) -> dict:
    """The run's frames, epochs, λ sweep, uniform scales and speed frames: the model's, or the quick ones."""
    return dict(train_frames=TRAIN_FRAMES, test_frames=tuple(n for _, n in TEST_CLIPS), epochs=SCALES.epochs,
                lams=MODEL_LAMS.get(model, LAMS), uniform=MODEL_UNIFORM.get(model, UNIFORM),
                speed_frames=SPEED_FRAMES) | (QUICK if quick else {})


def run(out_dir=None, quick: bool = False, model: str = MODEL, weights=None, progress: bool = True) -> dict:
    """Run the experiment; write the figures, ``frames.csv``, ``results.json`` and ``results.md`` to ``out_dir``
    (default :func:`results_dir`); return them."""
    lam0, cfg = recipes.scale_lam(model), settings(model, quick)
    lams = tuple(sorted(set(cfg["lams"] or ()) | {lam0}))
    out_dir = Path(results_dir(model) if out_dir is None else out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings = {}

    bundle = models.get(model, weights=weights)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    net.set_delta_dtype(net.dtype)  # increments in float32: about 2x faster than the default float64
    train = data.load_clip(TRAIN_CLIP, bundle, max_frames=cfg["train_frames"])
    test_clips = tuple((name, n) for (name, _), n in zip(TEST_CLIPS, cfg["test_frames"]))
    stream, segments = load_stream(bundle, test_clips)
    timings["load"] = time.perf_counter() - start

    # --- learn the scales for every λ at once (cached in the user cache)
    t = time.perf_counter()
    scale_config = recipes.scale_config(model).replace(epochs=cfg["epochs"])  # SCALES, from the model's init_scale
    calibrations = calibrate_sweep(net, train, lams, model=model, clip=TRAIN_CLIP, progress=progress,
                                   config=scale_config)
    timings["calibrate"] = time.perf_counter() - t

    # --- evaluate every λ, and uniform scales, on the test stream
    t = time.perf_counter()
    curve, uniform, default_ev, default_scales = evaluate_all(net, calibrations, cfg["uniform"], stream, segments,
                                                              lam0, progress)
    timings["evaluate"] = time.perf_counter() - t

    # --- speed of the simulation itself (default scales)
    t = time.perf_counter()
    net.set_scales(default_scales)
    speed = time_speed(net, bundle, stream[:cfg["speed_frames"]])
    timings["speed"] = time.perf_counter() - t

    ev = default_ev
    results = dict(
        config=dict(model=model, weights=str(weights) if weights else None, train_clip=TRAIN_CLIP,
                    train_frames=len(train), test=[dict(clip=n, start=a, stop=b) for n, a, b in segments],
                    **{k: scale_config.to_dict()[k] for k in ("init_scale", "lr", "epochs", "batch_size", "error",
                                                              "normalization")},
                    scale_config=scale_config.to_dict(), lams=lams, default_lam=lam0, uniform=cfg["uniform"],
                    delta_dtype=str(net.delta_dtype).removeprefix("torch."), quick=quick,
                    threads=torch.get_num_threads(), torch=torch.__version__),
        default=default_result(ev, segments, lam0, default_scales),
        curve=curve, uniform=uniform, speed=speed, target=TARGET,
        feature_distance_means=dict(maps=ev.feature_maps, l1=np.nanmean(ev.l1_distance, 1).tolist(),
                                    cosine=np.nanmean(ev.cosine_similarity, 1).tolist()),
        timings=timings)
    classes = bundle.classes
    write_frames_csv(ev, segments, classes, out_dir / "frames.csv")
    plot_fig5(ev, stream, segments, bundle, out_dir / "video_fig5.png", lam0, TRAIN_CLIP)
    plot_fig6(ev, segments, out_dir / "video_fig6.png")
    plot_tradeoff(results, segments, out_dir / "video_tradeoff.png")
    results["seconds"] = time.perf_counter() - start
    (out_dir / "results.json").write_text(json.dumps(_rounded(results), indent=1))
    (out_dir / "results.md").write_text(report(results, segments))
    return results


# ---------------------------------------------------------------------------------------------------------
# tables


def _rounded(obj, digits: int = 5):
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


def write_frames_csv(ev, segments, classes, path: Path) -> None:
    """Per frame: clip, ops of the three networks, energy, agreement and its cumulative mean, both classes."""
    clip_of = np.empty(ev.frames, dtype=object)
    for name, a, b in segments:
        clip_of[a:b] = name
    cum1, cum5 = ev.cumulative(ev.top1_agree), ev.cumulative(ev.top5_agree)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["frame", "clip", "ops_original", "ops_rounding", "ops_sigma_delta", "energy_nj_original",
                    "energy_nj_sigma_delta", "top1_agree", "top5_agree", "cumulative_top1", "cumulative_top5",
                    "class_original", "class_sigma_delta"])
        e_orig, e_sd = ev.energy_nj("original"), ev.energy_nj("sigma_delta")
        for t in range(ev.frames):
            w.writerow([t, clip_of[t], f"{ev.ops['original'][t]:.0f}", f"{ev.ops['rounding'][t]:.0f}",
                        f"{ev.ops['sigma_delta'][t]:.0f}", f"{e_orig[t]:.1f}", f"{e_sd[t]:.1f}",
                        int(ev.top1_agree[t]), int(ev.top5_agree[t]), f"{cum1[t]:.4f}", f"{cum5[t]:.4f}",
                        short_class(classes[ev.original_top5[t, 0, 0]]), short_class(classes[ev.sigma_delta_top5[t, 0, 0]])])


def report(results: dict, segments) -> str:
    """results.md: the default λ per clip, the trade-off curve, the speed of the simulation, per-layer costs."""
    d, cfg = results["default"], results["config"]
    lines = [f"# Video: {cfg['model']} as a Sigma-Delta network (Figures 5 and 6)", "",
             f"Scales learned on {cfg['train_clip']} ({cfg['train_frames']} frames, {cfg['epochs']} epochs, SGD lr "
             f"{cfg['lr']}, batch {cfg['batch_size']}, {cfg['error']}, from k = {cfg['init_scale']:g}); test stream "
             + " + ".join(f"{s['clip']} ({s['stop'] - s['start']} frames)" for s in cfg["test"])
             + ", no reset at the splice." + (" **Quick run.**" if cfg["quick"] else ""), "",
             f"## Default λ = {d['lam']:g}", "",
             "| clip | original ops/frame | rounding ops/frame | sigma-delta ops/frame | reduction | reduction "
             "(without frame 0) | hybrid reduction | SD / rounding | top-1 agreement | top-5 agreement |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, _, _ in segments:
        s, st = d["summary"][name], d["steady"][name]
        lines.append(f"| {name} | {s['ops_original_per_frame']:.4g} | {s['ops_rounding_per_frame']:.4g} | "
                     f"{s['ops_sigma_delta_per_frame']:.4g} | {s['reduction']:.2f}x | {st['reduction']:.2f}x | "
                     f"{s['reduction_hybrid']:.2f}x | {s['sigma_delta_vs_rounding']:.2f} | {s['top1_agreement']:.1%} | "
                     f"{s['top5_agreement']:.1%} |")
    lines += ["", "Hybrid: each layer, on each frame, runs whichever is cheaper, its sigma-delta additions or the "
              "dense layer on the rounded input (same outputs; the sparse engine's fallback)."]
    f0 = d["first_frame_ops"]
    lines += ["", f"First frame (Δ against zero state): rounding {f0['rounding']:.4g} ops = sigma-delta "
                  f"{f0['sigma_delta']:.4g} ops, {f0['sigma_delta'] / f0['original']:.1f}x the original.", "",
              "## Trade-off curve", "",
              "| scales | " + " | ".join(f"{n}: reduction (hybrid) | {n}: top-1 | {n}: top-5" for n, _, _ in segments)
              + " |", "|---|" + "---|---|---|" * len(segments)]
    for p in results["curve"] + results["uniform"]:
        lines.append(f"| {p['label']} | " + " | ".join(
            f"{p[n]['reduction']:.2f}x ({p[n]['reduction_hybrid']:.2f}x) | {p[n]['top1_agreement']:.1%} | "
            f"{p[n]['top5_agreement']:.1%}" for n, _, _ in segments) + " |")
    sp = results["speed"]
    lines += ["", "## Speed of the simulation", "",
              f"{sp['frames']} frames, {sp['threads']} threads: dense PyTorch pass {1e3 * sp['dense_s_per_frame']:.0f} "
              f"ms/frame; Sigma-Delta clip mode with op counting, float64 (exact) "
              f"{1e3 * sp['sigma_delta_float64_s_per_frame']:.0f} ms/frame (**{sp['ratio_float64']:.1f}x** dense), "
              f"float32 {1e3 * sp['sigma_delta_float32_s_per_frame']:.0f} ms/frame (**{sp['ratio_float32']:.1f}x**).",
              "", "## Per layer (default λ, mean ops per frame without frame 0)", "",
              "| layer | original | " + " | ".join(f"{n}: rounding | {n}: sigma-delta | {n}: SD/rounding"
                                                   for n, _, _ in segments) + " |",
              "|---|---|" + "---|---|---|" * len(segments)]
    first = segments[0][0]
    for layer, row in d["layers"][first].items():
        lines.append(f"| {layer} | {row['original']:.3g} | " + " | ".join(
            f"{d['layers'][n][layer]['rounding']:.3g} | {d['layers'][n][layer]['sigma_delta']:.3g} | "
            f"{d['layers'][n][layer]['sigma_delta_vs_rounding']:.2f}" for n, _, _ in segments) + " |")
    lines += ["", f"Total time {results.get('seconds', 0):.0f} s (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in results["timings"].items()) + ").", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help=f"output folder (default: {OUT}, or video_<model> beside it)")
    parser.add_argument("--quick", action="store_true", help=f"a few frames, one epoch, one λ: {QUICK}")
    parser.add_argument("--model", default=MODEL, help="an image model name (default: %(default)s)")
    parser.add_argument("--weights", help="a state_dict file (required for vgg19)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.out, quick=args.quick, model=args.model, weights=args.weights, progress=not args.no_progress)
    print(report(results, [(s["clip"], s["start"], s["stop"]) for s in results["config"]["test"]]))
    out = args.out or results_dir(args.model)
    print(f"wrote {out} in {results['seconds']:.1f} s")


if __name__ == "__main__":
    main()
