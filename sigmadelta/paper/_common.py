"""What the experiment modules share: the test clips, their setup, the evaluation of a network on each clip as a
stream of its own, and where they write results.

The test set (never trained on): two static cameras where the original's answers are confident (jwpIntro, testMovie),
two moving ones (cityCC0, bikes), and bigbuckbunny, the near-tie example (a cartoon with no ImageNet class: the
original's top-1 hops between classes). Each clip runs from zero state, on its own. Scales, bands and fine-tuning
learn on carphone and synthetic motion only.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models
from sigmadelta.eval.metrics import class_agreement, top_classes
from sigmadelta.eval.stream import run_stream
from sigmadelta.eval.decisive import decisive_frames, grey_level
from sigmadelta.eval.video import evaluate_stream
from sigmadelta.paper import default_out

__all__ = ["setup", "write_result", "load_clips", "judge_clips", "evaluate_clips", "clip_row", "CHUNK", "TEST_CLIPS",
           "STATIC", "MOVING", "NEAR_TIE", "TRAIN_CLIP", "AGREEMENT", "rounded"]

CHUNK = 20  # frames per clip-mode call (memory only)
TRAIN_CLIP = "carphone"  # scales, bands and σ are learned here; fine-tuning adds synthetic motion
STATIC, MOVING, NEAR_TIE = ("jwpIntro", "testMovie"), ("cityCC0", "bikes"), ("bigbuckbunny",)
TEST_CLIPS = {**{c: "static" for c in STATIC}, **{c: "moving" for c in MOVING}, **{c: "near-tie" for c in NEAR_TIE}}
AGREEMENT = dict(top1=0.90, top5=0.98)  # the bar of the targets: agreement with the original over all frames
EXACT = ("scales", "params", "stds")  # result keys whose values are settings, written unrounded


def setup(model: str):
    """One thread; the model's bundle, its converted original, a copy of it to change, and the training clip
    carphone preprocessed for it: ``(bundle, original, net, train)``."""
    torch.set_num_threads(1)
    bundle = models.get(model, progress=False)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    return bundle, original, copy.deepcopy(original), data.load_clip(TRAIN_CLIP, bundle)


def write_result(relpath: str, out: dict) -> Path:
    """Write ``out`` as indented JSON to the experiments' results folder, at ``relpath``, and say where."""
    path = default_out(relpath)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return path


def rounded(obj, digits: int = 5):
    """``obj`` with every float to ``digits`` significant digits (JSON results that diff well), but the values under a
    key ``"scales"``, ``"params"`` or ``"stds"``: settings that must read back exactly (rounding a scale moves levels)."""
    if isinstance(obj, float):
        return obj if obj != obj or obj in (float("inf"), float("-inf")) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {str(k): v if k in EXACT else rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def load_clips(bundle, names=tuple(TEST_CLIPS), frames: int | None = None) -> dict[str, torch.Tensor]:
    """The test clips preprocessed for ``bundle``, each ``[T, 1, ...]`` (all frames, or the first ``frames``)."""
    return {name: data.load_clip(name, bundle, max_frames=frames) for name in names}


def judge_clips(original, bundle, clips: dict[str, torch.Tensor]) -> dict:
    """Per clip, which frames are decisive for the original (:func:`sigmadelta.eval.decisive.decisive_frames`: its
    top-1 survives ±2 grey levels of uniform noise in 3 seeded draws), ``[T, 1]`` booleans."""
    grey = grey_level(bundle)
    return {name: decisive_frames(original, frames, grey, chunk=CHUNK) for name, frames in clips.items()}


def clip_row(ev, own: tuple | None = None) -> dict:
    """The numbers of one clip's evaluation (all frames, the first included: it is differenced against zero state):
    ops per frame and reductions in both conventions and the hybrid's, agreement over all and over decisive frames,
    the frame skipper at the same events (and additions) with its agreement, the change latency of both, ops per
    layer. ``own``: the agreement ``(top1, top5)`` of the net's own dense network with the original (fine-tuned
    weights), when measured."""
    s = ev.summary()
    skip, skip_add, lat = s["frame_skip"]["events"], s["frame_skip"]["additions"], s["change_latency"]
    row = dict(frames=s["frames"], original=s["ops_original_per_frame"], additions=s["ops_sigma_delta_per_frame"],
               events=s["ops_sigma_delta_events_per_frame"], reduction_additions=s["reduction_additions"],
               reduction_events=s["reduction_events"], reduction_hybrid=s["reduction_hybrid"],
               reduction_rounding=s["reduction_rounding"], top1=s["top1_agreement"], top5=s["top5_agreement"],
               decisive_frames=s["decisive_frames"], top1_decisive=s["top1_agreement_decisive"],
               top5_decisive=s["top5_agreement_decisive"], skip=skip,
               skip_additions=dict(n=skip_add["n"], reduction=skip_add["reduction"], top1=skip_add["top1_agreement"],
                                   top5=skip_add["top5_agreement"]),
               latency=dict(changes=lat["changes"], delta=lat["sigma_delta"], skip=lat["frame_skip"]))
    if ev.ops_per_layer:
        row["layers"] = {layer: dict(original=r["original"], additions=r["sigma_delta"], events=r["sigma_delta_events"])
                         for layer, r in ev.layer_summary().items()}
    if own is not None:
        row["dense_top1"], row["dense_top5"] = own
    return row


@torch.no_grad()
def _own_dense(net, frames: torch.Tensor, original_top5) -> tuple[float, float]:
    """Agreement of ``net``'s own weights run as the original network (1 unless fine-tuned) with the original's top
    classes ``[T, 1, 5]``: the ceiling that the weights leave to any delta scheme."""
    own = []
    run_stream(net, frames, ("original",), chunk=CHUNK, on_chunk=lambda c, out, nets: own.append(
        top_classes(out["original"])))
    top1, top5 = class_agreement(torch.cat(own), torch.as_tensor(original_top5))
    return float(top1.double().mean()), float(top5.double().mean())


@torch.no_grad()
def evaluate_clips(net, reference, clips: dict[str, torch.Tensor], decisive: dict, *, own_dense: bool = False,
                   keep: bool = False, progress: bool = False, label: str = "") -> dict:
    """``net`` on each clip as a stream of its own from zero state (increments in the model's dtype), against
    ``reference``'s original network: ``{clip: clip_row}`` (and ``"_evaluations"``, clip -> the
    :class:`~sigmadelta.eval.video.StreamEvaluation`, with ``keep``). ``own_dense``: also the agreement of ``net``'s
    own dense network (fine-tuned weights)."""
    net.set_delta_dtype(net.dtype)
    out, kept = {}, {}
    for name, frames in clips.items():
        start = time.perf_counter()
        ev = evaluate_stream(net, frames, chunk=CHUNK, reference=reference, progress=False, decisive=decisive[name])
        own = _own_dense(net, frames, ev.original_top5) if own_dense else None
        out[name] = clip_row(ev, own)
        if keep:
            kept[name] = ev
        if progress:
            r = out[name]
            print(f"  {label} {name:<13} {r['reduction_additions']:6.2f}x add. {r['reduction_events']:6.2f}x ev. top-1 "
                  f"{r['top1']:.0%} top-5 {r['top5']:.0%} decisive {_pct(r['top1_decisive'])} | skip every "
                  f"{r['skip']['n']}: {r['skip']['top1_agreement']:.0%} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
    if keep:
        out["_evaluations"] = kept
    return out


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.0%}"
