"""Where the sparse path stops paying, per layer kind: the measurements behind ``DENSE_ABOVE``/``SPARSE_OVERHEAD``.

    .venv/bin/python benchmarks/thresholds.py [--threads 1] [--frames 30] [--kinds linear,pointwise,...]

For one representative layer of each kind (fully connected, 1×1, k×k, depthwise and grouped convolution), a
stream is fed in which a chosen fraction of the input rows (pixels; inputs of the fully connected layer) change
by a lot every frame, and the layer's quantizer and the layer itself (the steps the decision changes; median per
frame, with the engine's step timers) are timed with that layer kind forced onto its sparse path and forced
dense, side by side. Printed as JSON, per kind: the per-frame times at each active fraction, the crossover (the
largest measured fraction at which sparse is still faster, relative to the dense work), and the sparse path's
fixed cost expressed in multiply-adds of the dense layer (its time at the smallest fraction minus that
fraction of the dense time, over the dense time per multiply-add).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from torch import nn

import sigmadelta
from sigmadelta.runtime.sparse import DENSE_ABOVE, engine_of

FRACTIONS = (0.01, 0.03, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)

LAYERS = {  # kind -> (layer, input shape of one sample, multiply-adds of the dense layer)
    "linear": (lambda: nn.Linear(2000, 2000), (2000,), 2000 * 2000),
    "pointwise": (lambda: nn.Conv2d(32, 96, 1), (32, 56, 56), 56 * 56 * 32 * 96),
    "conv": (lambda: nn.Conv2d(32, 32, 3, padding=1), (32, 56, 56), 56 * 56 * 32 * 32 * 9),
    "depthwise": (lambda: nn.Conv2d(96, 96, 3, padding=1, groups=96), (96, 56, 56), 56 * 56 * 96 * 9),
    "grouped": (lambda: nn.Conv2d(32, 32, 3, padding=1, groups=4), (32, 56, 56), 56 * 56 * 32 * 8 * 9),
}


def stream(shape, fraction: float, frames: int, generator: torch.Generator) -> torch.Tensor:
    """``[frames, 1, *shape]``: every frame, a random ``fraction`` of the rows (pixels, or features) jumps."""
    rows = shape[1:] if len(shape) > 1 else shape  # pixels (C, *S) or features (F,)
    x = torch.rand((1, *shape), generator=generator)
    out = []
    for _ in range(frames):
        mask = (torch.rand(rows, generator=generator) < fraction).to(x.dtype)
        x = x + 4.0 * mask * torch.randn((1, *shape), generator=generator)
        out.append(x)
    return torch.stack(out)


def time_per_frame(net, clip: torch.Tensor) -> float:
    """Median time per frame of the quantizer and the layer (the steps whose work the decision changes)."""
    engine = engine_of(net)
    net.reset()
    engine.profile = True
    net.run(clip)
    engine.profile = False
    kinds = {step.name: step.kind for step in engine.steps}
    per_frame = [sum(ts) for ts in zip(*(times[2:] for name, times in engine.timings.items()
                                          if kinds[name] in ("quantize", "linear", "conv")))]
    return statistics.median(per_frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--kinds", default=",".join(LAYERS), help="comma-separated layer kinds to measure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for kind in args.kinds.split(","):
        make, shape, macs = LAYERS[kind]
        net = sigmadelta.convert(nn.Sequential(make()).eval(), torch.zeros(1, *shape))
        net.set_scales({name: 1.0 for name in net.scales})
        net.set_mode("sigma-delta").set_backend("sparse")
        net.counting = False
        engine = engine_of(net)
        rows = []
        for fraction in FRACTIONS:
            clip = stream(shape, fraction, args.frames, torch.Generator().manual_seed(1))
            engine.set_dense_above(**{kind: 1.0})
            sparse = time_per_frame(net, clip)
            engine.set_dense_above(**{kind: 0.0})
            dense = time_per_frame(net, clip)
            rows.append({"fraction": fraction, "sparse_us": 1e6 * sparse, "dense_us": 1e6 * dense})
        engine.set_dense_above(**{kind: DENSE_ABOVE[kind]})
        faster = [r["fraction"] for r in rows if r["sparse_us"] < r["dense_us"]]
        first = rows[0]
        per_mac = first["dense_us"] / macs
        overhead = max(first["sparse_us"] - first["fraction"] * first["dense_us"], 0.0) / per_mac
        results[kind] = {"crossover_fraction": max(faster, default=0.0), "overhead_macs": overhead,
                         "dense_macs": macs, "current": DENSE_ABOVE[kind], "times": rows}
    print(json.dumps({"threads": args.threads, "frames": args.frames, "kinds": results}, indent=1))


if __name__ == "__main__":
    main()
