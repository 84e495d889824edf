"""The scales that ship with the package: each image model's scales at its default λ, learned on the calibration
clip with its recipe, on one thread, written to ``sigmadelta/recipes/scales/MODEL.json`` with the config, the clip,
the commit and the command that made them.

    python -m sigmadelta.paper.default_scales [--models squeezenet1_1 efficientnet-lite0]

They are results of pinned data (weights and clip from pinned packages), so shipping them gives every user the same
scales at once; learning them again on another machine or thread count rounds sums another way and can move a few
near-tied answers. `sigmadelta run` uses them when its scale-learning options are the defaults
(:func:`sigmadelta.recipes.shipped_scales`).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models, recipes
from sigmadelta.files.scales import save_scales
from sigmadelta.learn.calibrate import calibrate

MODELS = ("squeezenet1_1", "efficientnet-lite0")


def _commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes to the package, the shipped scales aside), or
    ``"unknown"`` outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "sigmadelta",
                                ":!sigmadelta/recipes/scales"],  # its own outputs do not make the code dirty
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def write(model: str, out_dir: Path = recipes.SHIPPED_SCALES, progress: bool = True) -> Path:
    """Learn ``model``'s default scales (one thread, no cache) and write them to ``out_dir/MODEL.json``."""
    torch.set_num_threads(1)
    bundle = models.get(model, progress=progress)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    config = recipes.scale_config(model).replace(lam=recipes.scale_lam(model))
    frames = data.load_clip(recipes.CALIBRATION_CLIP, bundle)
    result = calibrate(net, frames, config.lam, model=model, clip=recipes.CALIBRATION_CLIP, config=config,
                       cache=False, progress=progress, num_threads=1)
    meta = dict(result.meta, config=config.to_dict(), commit=_commit(), threads=1,
                date=datetime.date.today().isoformat(), command="python -m sigmadelta.paper.default_scales")
    path = save_scales(out_dir / f"{model}.json", net, model, meta)
    print(f"wrote {path} (λ = {config.lam:g}, learned on {recipes.CALIBRATION_CLIP}, {len(frames)} frames)")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--out", type=Path, default=recipes.SHIPPED_SCALES)
    args = p.parse_args(argv)
    for model in args.models:
        write(model, args.out)


if __name__ == "__main__":
    main()
