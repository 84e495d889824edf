"""The ``sigmadelta`` command: a thin argparse layer over the package's public functions.

    sigmadelta demo [--frames N] [--lam L] [--synthetic] [--json FILE]
    sigmadelta data [--json FILE]
    sigmadelta reproduce {random-net,mnist,video} [--out DIR] [--quick]
    sigmadelta --help
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


def write_json(path: str | os.PathLike, data) -> None:
    """Write JSON atomically: a temp file in the same folder, then a rename (no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------------------
# demo


def _demo(args) -> int:
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
        train, _ = data.mnist_clip("train", temporal=False, max_frames=args.calibrate)
        print(f"learning the scales: λ = {args.lam:g}, one epoch over the first {len(train):,} training images "
              "(paper settings: KL error, SGD lr 0.001, batch 10)")
        sigmadelta.optimize_scales(net, train[:, 0], args.lam, error="kl", epochs=1, batch_size=10,
                                   eval_every=None, eval_data=train[:1000, 0], num_threads=1, progress=True)
        clip, labels = data.mnist_clip("test", temporal=True, max_frames=args.frames)
        labels = labels.unsqueeze(1)
        what = (f"the pre-trained 784-200-200-10 MNIST MLP on Temporal-MNIST test ({len(clip):,} frames, one stream), "
                f"scales learned with λ = {args.lam:g}: " + ", ".join(f"{k:.3g}" for k in net.scales.values()))
    print(f"\nsigmadelta demo: {what}\n")
    result = compare_networks(net, clip, labels)
    result["description"] = what
    print(format_layer_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------------------
# data and experiments


def _data(args) -> int:
    from sigmadelta.data import catalog

    entries = catalog()
    if args.json:
        write_json(args.json, entries)
    width = max(len(e["name"]) for e in entries)
    for e in entries:
        mark = "yes" if e["present"] else "no "
        print(f"{e['kind']:<8} {e['name']:<{width}}  present: {mark}  {e['source']}")
    return 0


EXPERIMENTS = {"random-net": "experiments.oconnor2017.random_net", "mnist": "experiments.oconnor2017.mnist",
               "video": "experiments.oconnor2017.video"}


def _reproduce(args) -> int:
    import importlib

    try:
        experiment = importlib.import_module(EXPERIMENTS[args.experiment])
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("experiments"):
            raise
        print(f"sigmadelta reproduce: the experiments are not installed ({e}); run it from a source checkout "
              "installed with `make install` or `pip install -e .`", file=sys.stderr)
        return 2
    argv = (["--out", str(args.out)] if args.out else []) + (["--quick"] if args.quick else [])
    experiment.main(argv)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigmadelta",
        description="Sigma-Delta quantized networks: convert a PyTorch model so that its work follows how much "
                    "its input changes, and count what it costs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the pre-trained MNIST MLP on Temporal-MNIST as the four networks: "
                                       "per-layer table of ops, energy and error")
    demo.add_argument("--frames", type=int, default=10_000, help="Temporal-MNIST test frames (default: all 10,000)")
    demo.add_argument("--lam", type=float, default=1e-8, help="trade-off λ for the scales (default 1e-8)")
    demo.add_argument("--calibrate", type=int, default=10_000, metavar="N",
                      help="training images to learn the scales on (default 10,000)")
    demo.add_argument("--synthetic", action="store_true",
                      help="a random MLP on a synthetic stream instead (no data needed)")
    demo.add_argument("--seed", type=int, default=0, help="seed for --synthetic")
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.set_defaults(func=_demo)

    data = sub.add_parser("data", help="list every dataset, clip and model, where it comes from, whether present")
    data.add_argument("--json", metavar="FILE", help="also write the list as JSON")
    data.set_defaults(func=_data)

    reproduce = sub.add_parser("reproduce", help="reproduce a figure of the paper: figures, tables, results.json")
    reproduce.add_argument("experiment", choices=sorted(EXPERIMENTS))
    reproduce.add_argument("--out", type=Path, help="output folder (default: the experiment's results folder)")
    reproduce.add_argument("--quick", action="store_true", help="fewer samples and settings, for a first look")
    reproduce.set_defaults(func=_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from sigmadelta.errors import SigmaDeltaError

    try:
        return args.func(args)
    except (SigmaDeltaError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"sigmadelta {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
