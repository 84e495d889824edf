"""The ``sigmadelta`` command: a thin argparse layer over the package's public functions.

    sigmadelta demo [--steps N] [--json FILE]
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
    from sigmadelta.testing import correlated_stream, mlp

    torch.manual_seed(args.seed)
    model = mlp((784, 200, 200, 10))
    clip = correlated_stream(args.steps, (784,), step_std=0.02, generator=torch.Generator().manual_seed(args.seed))
    what = (f"a randomly initialised 784-200-200-10 MLP on a synthetic, temporally correlated stream "
            f"({args.steps} steps, pixels in [0, 1], each step moves a pixel by ~0.02)")
    net = sigmadelta.convert(model.double(), torch.zeros(1, 784, dtype=torch.float64))
    net.set_scales({name: args.scale for name in net.scales})
    print(f"sigmadelta demo: {what}; all scales k = {args.scale}\n")
    result = compare_networks(net, clip.double())
    result["description"] = what
    print(format_layer_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"\nwrote {args.json}")
    return 0


# ---------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigmadelta",
        description="Sigma-Delta quantized networks: convert a PyTorch model so that its work follows how much "
                    "its input changes, and count what it costs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the four networks on a stream and print a per-layer table of ops")
    demo.add_argument("--steps", type=int, default=1000, help="time steps of the stream (default 1000)")
    demo.add_argument("--scale", type=float, default=16.0, help="scale k of every quantizer (default 16)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.set_defaults(func=_demo)
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
