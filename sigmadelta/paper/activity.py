"""Where the spread thresholds' messages come from, per quantizer, and what widening the pixels' band alone buys.

    python -m sigmadelta.paper.activity MODEL [--tau T] [--first-bands THETA ...]

The network runs the thresholds scheme at ``τ`` with the bands spread by output sensitivity
(:func:`sigmadelta.allocate_bands`; σ and the statistics on carphone), as in ``reproduce schemes``. On the first 40
frames of bigbuckbunny (the static test clip) it reports, per quantizer and from the second frame on, the share of
input values that send a message (units), of pixels where any channel sends (pixels, what the sparse engine's
per-layer switch counts), and of channels where any pixel sends (channels). Then, on the test stream bigbuckbunny
100 + bikes 100, the events and agreement with the first quantizer's band (the pixels') replaced by each
``--first-bands`` value in input units, the others kept. Writes ``results/schemes/activity/<model>.json``.
"""

import argparse
import json

import torch

import sigmadelta
from sigmadelta import data
from sigmadelta.paper._common import evaluate_segments, setup, write_result
from sigmadelta.paper.finetune import TEST_CLIPS
from sigmadelta.paper.imagenet_video import load_stream


def activity(net, frames) -> dict:
    net.set_mode("sigma-delta")
    net.reset()
    with torch.no_grad():
        net.run(frames)
    rows = {}
    for name, q in net.quantizers.items():
        sent = q.observation.s[1:] != 0  # (T - 1, C, ...) from the second frame on
        spatial = tuple(range(2, sent.dim()))
        rows[name] = dict(shape=list(sent.shape[1:]), units=float(sent.float().mean()),
                          pixels=float(sent.any(1).float().mean()) if spatial else None,
                          channels=float(sent.flatten(2).any(-1).float().mean()) if spatial else None)
    net.reset()
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--tau", type=float, default=0.03)
    p.add_argument("--first-bands", type=float, nargs="*", default=(3.0, 6.0, 10.0))
    args = p.parse_args(argv)
    bundle, original, net, train = setup(args.model)
    net.set_scheme("threshold", tau=args.tau, calibration=train)
    sigmadelta.allocate_bands(net, train)
    spread = dict(net.scheme_params)
    first = next(iter(spread))
    out = dict(model=args.model, tau=args.tau, bands=spread,
               activity=activity(net, data.load_clip("bigbuckbunny", bundle, max_frames=40)), first_band={})
    for name, row in out["activity"].items():
        print(f"{name:28s} {str(tuple(row['shape'])):16s} units {row['units']:.3f} pixels {row['pixels']} "
              f"channels {row['channels']}")
    stream, segments = load_stream(bundle, TEST_CLIPS)
    for band in (spread[first], *args.first_bands):
        net.set_scheme("threshold", theta=spread | {first: band})
        result = evaluate_segments(net, original, stream, segments)
        out["first_band"][f"{band:g}"] = {clip: dict(events=r["reduction_events"], top1=r["top1_agreement"],
                                                     top5=r["top5_agreement"]) for clip, r in result.items()}
        print(first, f"θ {band:g}", json.dumps(out["first_band"][f"{band:g}"]), flush=True)
    write_result(f"schemes/activity/{args.model}.json", out)


if __name__ == "__main__":
    main()
