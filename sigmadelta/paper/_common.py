"""What the experiment modules share: their setup, the evaluation of a network on segments of a test stream, and
where they write results."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models
from sigmadelta.eval.metrics import class_agreement, top_classes
from sigmadelta.eval.stream import run_stream
from sigmadelta.eval.video import evaluate_stream
from sigmadelta.paper import default_out

__all__ = ["setup", "write_result", "evaluate_segments", "CHUNK"]

CHUNK = 20  # frames per clip-mode call (memory only)


def setup(model: str):
    """One thread; the model's bundle, its converted original, a copy of it to change, and the training clip
    carphone preprocessed for it: ``(bundle, original, net, train)``."""
    torch.set_num_threads(1)
    bundle = models.get(model, progress=False)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    return bundle, original, copy.deepcopy(original), data.load_clip("carphone", bundle)


def write_result(relpath: str, out: dict) -> Path:
    """Write ``out`` as indented JSON to the experiments' results folder, at ``relpath``, and say where."""
    path = default_out(relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return path


@torch.no_grad()
def evaluate_segments(net, reference, stream: torch.Tensor, segments) -> dict:
    """``net`` on ``stream`` (its increments in the model's dtype), per segment ``(name, start, stop)``: reductions
    (additions, events), top-1/top-5 agreement with ``reference``'s original network, the delta network's ops per
    layer (frame 0 left out), and the agreement of ``net``'s own dense network (its weights, original mode: 1 unless
    fine-tuned), the ceiling that its weights leave to any delta scheme."""
    net.set_delta_dtype(net.dtype)
    ev = evaluate_stream(net, stream, chunk=CHUNK, reference=reference, progress=False)
    own = []  # net's own weights, as the original network
    run_stream(net, stream, ("original",), chunk=CHUNK, on_chunk=lambda c, out, nets: own.append(
        top_classes(out["original"])))
    dense1, dense5 = (a.double().numpy()[:, 0] for a in class_agreement(torch.cat(own), torch.as_tensor(
        ev.original_top5)))
    out = {}
    for name, a, b in segments:
        s = ev.summary(a, b)
        out[name] = dict(frames=b - a, reduction=s["reduction_additions"], reduction_events=s["reduction_events"],
                         ops_sigma_delta_per_frame=s["ops_sigma_delta_per_frame"],
                         ops_original_per_frame=s["ops_original_per_frame"], top1_agreement=s["top1_agreement"],
                         top5_agreement=s["top5_agreement"], dense_top1_agreement=float(dense1[a:b].mean()),
                         dense_top5_agreement=float(dense5[a:b].mean()),
                         sd_per_layer={k: v["sigma_delta"] for k, v in ev.layer_summary(max(a, 1), b).items()})
    return out
