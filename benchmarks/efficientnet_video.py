"""EfficientNet-Lite0 on a video clip: sparse Sigma-Delta backend vs the dense original, on the CPU.

    .venv/bin/python benchmarks/efficientnet_video.py --clip bigbuckbunny [--frames 132] [--start 0]
        [--threads 1] [--repeats 3] [--levels 16] [--scales scales.json]

Prints one JSON object: :func:`sigmadelta.runtime.bench.benchmark`'s result plus the top-1 and top-5 agreement of
the sigma-delta network with the original over the clip's frames, and the time of the original network run
channels-last (its faster layout on CPU; the engine runs its dense convolutions channels-last too).

Scales: by default each quantizer gets ``k = levels / std(x)``, ``std(x)`` being the standard deviation of its
input over the clip's first 4 frames in the original network: ``levels`` rounding steps per standard deviation
(16 keeps the original's top-1 on the bigbuckbunny frames we checked, and its top-5 always). ``--scales`` reads a
JSON mapping quantizer name -> k instead (e.g. from ``sigmadelta.optimize_scales``).
"""

from __future__ import annotations

import argparse
import json

import torch

import sigmadelta
from sigmadelta.data import load_clip
from sigmadelta.models import get
from sigmadelta.eval.timing import benchmark, channels_last_ms


def std_scales(net, clip: torch.Tensor, levels: float) -> dict[str, float]:
    """``k = levels / std(x)`` per quantizer, from the original network on ``clip``."""
    net.set_mode("original")
    with torch.no_grad():
        net.run(clip)
    scales = {name: levels / max(q.observation.x.std().item(), 1e-6) for name, q in net.quantizers.items()}
    net.reset()
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clip", default="bigbuckbunny")
    parser.add_argument("--frames", type=int, default=None, help="frames to use (default: the whole clip)")
    parser.add_argument("--start", type=int, default=0, help="first frame to use")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--levels", type=float, default=16.0)
    parser.add_argument("--scales", default=None, help="JSON file: quantizer name -> k")
    args = parser.parse_args()

    bundle = get("efficientnet-lite0")
    stop = None if args.frames is None else args.start + args.frames
    clip = load_clip(args.clip, bundle, max_frames=stop)[args.start:]  # (T, 1, 3, 224, 224)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    if args.scales:
        with open(args.scales) as f:
            scales = {k: float(v) for k, v in json.load(f).items()}
    else:
        scales = std_scales(net, clip[:4], args.levels)

    result = benchmark(net, clip, threads=args.threads, repeats=args.repeats, scales=scales, original=bundle.model,
                       model="efficientnet-lite0", data=f"{args.clip} frames {args.start}-{args.start + len(clip) - 1}")
    result["dense_channels_last_ms_per_frame"] = channels_last_ms(bundle.model, clip[1:], args.threads, args.repeats)
    result["speedup_vs_channels_last"] = result["dense_channels_last_ms_per_frame"] / result["sigma_delta_ms_per_frame"]

    # agreement with the original, frame by frame (the paper's measure for video)
    with torch.inference_mode():
        original = torch.cat([bundle.model(f) for f in clip])  # (T, 1000)
    net.set_mode("sigma-delta").set_backend("sparse")
    net.counting = False
    out = net.run(clip)[:, 0]
    result["top1_agreement"] = (out.argmax(-1) == original.argmax(-1)).double().mean().item()
    top5 = original.topk(5, -1).indices
    result["top5_agreement"] = (top5 == out.argmax(-1, keepdim=True)).any(-1).double().mean().item()
    result["scales_rule"] = args.scales or f"k = {args.levels} / std(x) over frames 0-3"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
