"""The paper's experiments (O'Connor & Welling, ICLR 2017), one module per figure, on the public API only.

Each module has ``run(out_dir, quick=..., ...)`` and ``main(argv)``; ``sigmadelta reproduce NAME`` calls
``main``. They import nothing of the package but what a user can (``sigmadelta``, ``sigmadelta.data``,
``sigmadelta.models`` and the public names of their modules), and nothing in the package imports them but the CLI.

Results go to ``--out``; by default to ``experiments/oconnor2017/results/NAME`` of the source checkout the package
was installed from (where the committed results live), else to ``sigmadelta-results/NAME`` in the current folder.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EXPERIMENTS", "default_out"]

# `sigmadelta reproduce NAME` -> (module of this package, what it reproduces)
EXPERIMENTS = {"random-net": ("random_net", "Figure 2"), "mnist": ("mnist", "Figure 4, Appendix E"),
               "video": ("imagenet_video", "Figures 5 and 6"), "schemes": ("schemes", "delta schemes side by side"),
               "finetune": ("finetune", "fine-tuning for the delta cost")}


def default_out(name: str) -> Path:
    """The default output folder of experiment ``name`` (a results folder name, e.g. ``"video"``)."""
    checkout = Path(__file__).resolve().parents[2] / "experiments" / "oconnor2017" / "results"
    return (checkout if checkout.is_dir() else Path("sigmadelta-results")) / name
