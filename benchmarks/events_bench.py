"""The event engine against the original network (NCHW and channels-last), side by side, on one clip.

    .venv/bin/python benchmarks/events_bench.py --model squeezenet1_1 --clip jwpIntro \\
        --scheme threshold --tau 0.3 [--frames 60] [--start 0] [--streams 1] [--threads 1] [--repeats 5] \\
        [--policy auto] [--compile-time] [--flips] [--json benchmarks/results/events_NAME.json]
    .venv/bin/python benchmarks/events_bench.py --model mnist-mlp-wide --clip temporal-mnist --frames 1000

Prints (and with ``--json`` writes) :func:`sigmadelta.eval.timing.benchmark`'s result with the command, the
setting and, with ``--compile-time``, the first-call build time in a fresh process with an empty numba cache
(cold) and again with it filled (cached); with ``--flips``, how often the engine's messages differ from the dense
simulation's (:func:`sigmadelta.runtime.events.flips.message_mismatch`).

Settings: ``--scheme threshold --tau T``: θ = T·σ of each quantizer's input on 30 carphone frames (never the
timed clip; for the MNIST MLPs, 1,000 training digits). ``--scheme sigma-delta``: scales learned on carphone
(``sigmadelta.learn.calibrate.calibrate``, the model's default λ, cached), or for the MNIST MLPs as the ``demo``/``bench``
commands learn them (10,000 training digits). ``--streams B``: B streams at once, stream ``b`` the clip from
frame ``start + b·stride`` (``--stride``, default ``frames // B``): B cameras on similar scenes.

Threads: ``--threads`` for torch (the originals and the engine's dense fallbacks); the engine's kernels are
single-threaded. ``OMP_WAIT_POLICY=PASSIVE`` unless set: with two torch threads on a busy two-core machine,
OpenMP's default spin-waiting made the two-thread original an order of magnitude slower than the one-thread one.
"""

from __future__ import annotations

import os

# torch's OpenMP workers must not spin while a kernel runs on a shared machine (set before torch loads libgomp);
# both the originals and the engine run under it
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import sigmadelta  # noqa: E402
from sigmadelta import data, models, recipes  # noqa: E402
from sigmadelta.eval.timing import benchmark  # noqa: E402


def load(args):
    """``(bundle, frames [T, B, ...], calibration frames)``."""
    bundle = models.get(args.model, progress=False)
    if args.clip in ("temporal-mnist", "mnist"):
        clip, _ = data.mnist_clip("test", temporal=args.clip == "temporal-mnist",
                                  max_frames=args.start + args.frames + (args.streams - 1) * args.stride)
        calibration = data.mnist_clip("train", temporal=False, max_frames=1000)[0]
    else:
        clip = data.load_clip(args.clip, bundle, max_frames=args.start + args.frames + (args.streams - 1) * args.stride)
        calibration = data.load_clip("carphone", bundle, max_frames=30)
    starts = [args.start + b * args.stride for b in range(args.streams)]
    if starts[-1] + args.frames > len(clip):
        raise SystemExit(f"{args.clip} has {len(clip)} frames: too few for {args.streams} streams of {args.frames}")
    frames = torch.cat([clip[s:s + args.frames] for s in starts], 1)  # (T, B, ...)
    return bundle, frames, calibration


def configure(args, bundle, net, calibration) -> dict:
    """Set the scheme (and scales); returns the setting for the JSON."""
    if args.scheme == "threshold":
        net.set_scheme("threshold", tau=args.tau, calibration=calibration)
        return {"scheme": "threshold", "tau": args.tau, "theta_from": "30 carphone frames" if bundle.input_shape !=
                (784,) else "1,000 MNIST training digits"}
    if bundle.input_shape == (784,):
        lam = recipes.scale_lam(args.model)
        train, _ = data.mnist_clip("train", temporal=False, max_frames=10_000)
        sigmadelta.optimize_scales(net, train[:, 0], config=recipes.DEMO_MLP.replace(lam=lam),
                                   eval_data=train[:1000, 0], num_threads=1)
        source = f"learned on 10,000 MNIST training digits (DEMO_MLP, λ = {lam:g})"
    else:
        from sigmadelta.learn.calibrate import calibrate

        lam = recipes.scale_lam(args.model)
        frames = data.load_clip("carphone", bundle)
        result = calibrate(net, frames, lam, model=args.model, clip="carphone", config=recipes.scale_config(args.model))
        source = f"calibrated on carphone (λ = {lam:g}), cache {result.path}"
    if args.scheme == "hysteresis":
        net.set_scheme("hysteresis", h=args.h)
    return {"scheme": args.scheme, "h": args.h if args.scheme == "hysteresis" else None, "scales": source}


def compile_times(args) -> dict:
    """First ``net.run`` of the engine (plan, kernels, calibration) in a fresh process: with an empty numba cache
    (cold) and again with the cache it left (cached)."""
    code = ("import time, torch, sigmadelta; from sigmadelta import models; b = models.get(%r, progress=False); "
            "net = sigmadelta.convert(b.model, b.example_input()).set_mode('sigma-delta'); net.counting = False; "
            "net.set_backend('events'); x = b.example_input().unsqueeze(0).expand(2, *b.example_input().shape); "
            "t = time.perf_counter(); net.run(x.contiguous()); print(time.perf_counter() - t)" % args.model)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                     check=True).stdout.split()[-1]) for _ in range(2)]
    return {"cold_s": runs[0], "cached_s": runs[1]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="squeezenet1_1")
    parser.add_argument("--clip", required=True, help=f"a clip {tuple(data.CLIPS)}, a video file, or temporal-mnist")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--scheme", default="threshold", choices=("threshold", "sigma-delta", "hysteresis"))
    parser.add_argument("--tau", type=float, default=0.07)
    parser.add_argument("--h", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--policy", default="auto")
    parser.add_argument("--compare", nargs="*", default=[], help="other backends to time beside, e.g. sparse")
    parser.add_argument("--compile-time", action="store_true")
    parser.add_argument("--flips", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    args.stride = args.stride if args.stride is not None else max(1, args.frames // args.streams)
    torch.set_num_threads(args.threads)
    bundle, frames, calibration = load(args)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    setting = configure(args, bundle, net, calibration)
    command = "benchmarks/events_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    meta = {"command": command, "model": args.model, "clip": args.clip, "start": args.start,
            "setting": setting, "environment": _environment()}
    result = benchmark(net, frames, original=bundle.model, threads=args.threads, repeats=args.repeats,
                       policy=args.policy, compare=tuple(args.compare), meta=meta)
    if args.flips:
        from sigmadelta.runtime.events.flips import message_mismatch

        mismatch = message_mismatch(net.dense_copy("sigma-delta"), net, frames, chunk=8)
        result["message_mismatch"] = {k: v for k, v in mismatch.items() if k != "outputs"}
    if args.compile_time:
        result["compile"] = compile_times(args)
    print(json.dumps(_summary(result), indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return result


def _summary(r: dict) -> dict:
    keys = ("model", "clip", "setting", "streams", "threads", "ms_per_frame", "speedup", "speedup_nchw",
            "events_ratio", "efficiency", "top1_agreement", "frame_skipping_every", "argmax_agreement",
            "rel_max_abs_diff", "input_check_ms_per_frame", "compile", "message_mismatch")
    return {k: r[k] for k in keys if k in r}


def _environment() -> dict:
    import numba

    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        name = "unknown"
    return {"cpu": f"{name}, {os.cpu_count()} cores", "torch": torch.__version__, "numba": numba.__version__,
            "numba_threading_layer": numba.config.THREADING_LAYER,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
            "load_average_at_start": os.getloadavg()}


if __name__ == "__main__":
    start = time.time()
    main()
    print(f"({time.time() - start:.0f} s)", file=sys.stderr)
