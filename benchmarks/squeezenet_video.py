"""SqueezeNet v1.1 on a video clip: sparse Sigma-Delta backend vs the dense original, with the engine forced
sparse or not.

    .venv/bin/python benchmarks/squeezenet_video.py [--clip bigbuckbunny] [--start 0] [--frames 100] [--lam 1e-10]
        [--threads 1] [--repeats 3] [--force-sparse]

Prints one JSON object: :func:`sigmadelta.runtime.bench.benchmark`'s result. Scales: learned on carphone the way
`sigmadelta run` / `bench` learn them (read from the user cache when `sigmadelta reproduce video --model
squeezenet1_1` has learned them). ``--force-sparse`` sets every layer kind's dense threshold to 1 (sparse whenever
any input pixel is idle; only a stream's first frame is dense): what the sparse path costs where the engine, by its
measured thresholds, would not take it.
"""

from __future__ import annotations

import argparse
import json

import sigmadelta
from sigmadelta.data import load_clip
from sigmadelta.models import get
from sigmadelta.eval.timing import benchmark, channels_last_ms
from sigmadelta.runtime.sparse import DENSE_ABOVE
from sigmadelta import recipes
from sigmadelta.learn.calibrate import calibrate

MODEL = "squeezenet1_1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", default="bigbuckbunny")
    parser.add_argument("--start", type=int, default=0, help="first frame to use")
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--lam", type=float, default=recipes.scale_lam(MODEL))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--force-sparse", action="store_true")
    args = parser.parse_args()

    bundle = get(MODEL)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    cal = calibrate(net, load_clip("carphone", bundle), args.lam, model=MODEL, clip="carphone", progress=False,
                    config=recipes.scale_config(MODEL))
    net.set_scales(cal.scales)
    clip = load_clip(args.clip, bundle, max_frames=args.start + args.frames)[args.start:]  # (T, 1, 3, 227, 227)
    dense_above = {kind: 1.0 for kind in DENSE_ABOVE} if args.force_sparse else None
    result = benchmark(net, clip, threads=args.threads, repeats=args.repeats, original=bundle.model, model=MODEL,
                       data=f"{args.clip} frames {args.start}-{args.start + len(clip) - 1}", dense_above=dense_above)
    result["lam"], result["scales_cached"], result["force_sparse"] = args.lam, cal.cached, args.force_sparse
    result["dense_channels_last_ms_per_frame"] = channels_last_ms(bundle.model, clip[1:], args.threads, args.repeats)
    result["speedup_vs_channels_last"] = result["dense_channels_last_ms_per_frame"] / result["sigma_delta_ms_per_frame"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
