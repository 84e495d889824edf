"""Hysteresis with h learned per quantizer (:func:`sigmadelta.learn_scheme_params`) on the schemes experiment's
protocol, against the same scales with one h for all.

    python -m sigmadelta.paper.learned_h MODEL SCALES_LAM LAM [--frames N] [--start H] [--convention C]
        [--sweeps S] [--threshold] [--candidates C ...] [--synthetic N]

Scales learned on carphone at SCALES_LAM (the paper's recipe, cached); h searched per quantizer on the first N
carphone frames (default 40), or with ``--synthetic N`` on N synthetic training clips of the fine-tuning experiment,
from ``h = START`` (default 1) over the candidates (default 0.5, 1, 2, 3, 4) for S sweeps (default 1), at trade-off
LAM per op of COST (``events``, default, or ``additions``); then the test stream bigbuckbunny 100 + bikes 100 (never
searched on) with the uniform START and with the learned h. ``--threshold``: the peers' thresholds the same way,
START being τ (θ = τ·σ of each layer's input on carphone) and each θ tried at the candidates times its start (the
scales are then unused: k = 1). Writes ``results/schemes/learned_h/<tag>.json``, the tag naming model, λs, cost and
whatever differs from the defaults.
"""

import argparse
import time

import torch

from sigmadelta import recipes
from sigmadelta.learn.calibrate import calibrate
from sigmadelta.learn.finetune import training_clips
from sigmadelta.learn.scheme_search import learn_scheme_params
from sigmadelta.paper._common import evaluate_segments, setup, write_result
from sigmadelta.paper.finetune import CALIBRATION, TEST_CLIPS
from sigmadelta.paper.imagenet_video import load_stream

CANDIDATES = (0.5, 1.0, 2.0, 3.0, 4.0)


def brief(result: dict) -> dict:
    return {clip: dict(additions=round(r["reduction"], 2), events=round(r["reduction_events"], 2),
                       top1=r["top1_agreement"], top5=r["top5_agreement"]) for clip, r in result.items()}


def search_frames(args, bundle, train: torch.Tensor) -> torch.Tensor:
    """The frames searched on: carphone's first ``--frames``, or ``--synthetic`` N training clips as one batch."""
    if not args.synthetic:
        return train[:args.frames]
    clips, _ = training_clips(bundle, ["synthetic"])
    return torch.cat(clips[:args.synthetic], dim=1)  # (16, N, 3, H, W): N streams side by side


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("scales_lam", type=float)
    p.add_argument("lam", type=float)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--start", type=float, default=1.0)
    p.add_argument("--convention", default="events", choices=("events", "additions"))
    p.add_argument("--sweeps", type=int, default=1)
    p.add_argument("--candidates", type=float, nargs="+", default=CANDIDATES)
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="search on N of the fine-tuning experiment's "
                   "synthetic training clips (16 frames each, side by side as a batch) instead of carphone")
    p.add_argument("--threshold", action="store_true", help="the peers' thresholds instead: START is τ (θ = τ·σ "
                   "of each input on carphone), each θ searched over CANDIDATES times its start")
    args = p.parse_args(argv)
    bundle, original, net, train = setup(args.model)
    calibrate(net, train, args.scales_lam, model=args.model, clip="carphone", progress=False,
              init_scale=recipes.scale_config(args.model).init_scale, **CALIBRATION)
    stream, segments = load_stream(bundle, TEST_CLIPS)
    out = dict(model=args.model, scheme="threshold" if args.threshold else "hysteresis", scales_lam=args.scales_lam,
               lam=args.lam, convention=args.convention, frames=args.frames, synthetic=args.synthetic,
               start=args.start, sweeps=args.sweeps, candidates=args.candidates)
    if args.threshold:
        net.set_scheme("threshold", tau=args.start, calibration=train)
    else:
        net.set_scheme("hysteresis", h=args.start)
    start = net.scheme_params
    candidates = {name: [c * (p0 if args.threshold else 1.0) for c in args.candidates] for name, p0 in start.items()}
    out["uniform"] = evaluate_segments(net, original, stream, segments)
    print("uniform", brief(out["uniform"]), flush=True)
    started = time.perf_counter()
    search = learn_scheme_params(net, search_frames(args, bundle, train), args.lam, scheme=net.scheme,
                                 candidates=candidates, start=start, convention=args.convention, sweeps=args.sweeps,
                                 progress=False)
    out.update(search_seconds=time.perf_counter() - started, search=search.to_dict())
    print("θ" if args.threshold else "h", search.params, flush=True)
    out["learned"] = evaluate_segments(net, original, stream, segments)
    print("learned", brief(out["learned"]))
    tag = "-".join([f"threshold{args.start:g}"] * args.threshold + [args.model, f"{args.scales_lam:g}", f"{args.lam:g}",
                                                                   args.convention])
    tag += "".join(f"-c{c:g}" for c in args.candidates) if tuple(args.candidates) != CANDIDATES else ""
    tag += f"-synthetic{args.synthetic}" if args.synthetic else ""
    tag += (f"-{args.frames}f" if args.frames != 40 else "") + (f"-{args.sweeps}sweeps" if args.sweeps != 1 else "")
    write_result(f"schemes/learned_h/{tag}.json", out)


if __name__ == "__main__":
    main()
