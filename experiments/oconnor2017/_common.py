"""What the experiment scripts of this folder share: their setup and where they write results (``results/``)."""

import copy
import json
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models

RESULTS = Path(__file__).parent / "results"


def setup(model: str):
    """One thread; the model's bundle, its converted original, a copy of it to change, and the training clip
    carphone preprocessed for it: ``(bundle, original, net, train)``."""
    torch.set_num_threads(1)
    bundle = models.get(model, progress=False)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    return bundle, original, copy.deepcopy(original), data.load_clip("carphone", bundle)


def write_result(relpath: str, out: dict) -> Path:
    """Write ``out`` as indented JSON to ``results/<relpath>``, making folders as needed, and say where."""
    path = RESULTS / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return path
