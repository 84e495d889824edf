"""Per-frame evaluation of a converted network on a video stream (the paper's Figures 5 and 6).

:func:`evaluate_stream` runs a stream of frames, chunk by chunk in clip mode and never resetting, through the
Sigma-Delta network and through the original network, and records for every frame:

- the ops of the original (dense, constant), the Rounding and the Sigma-Delta networks, in total and per layer
  (the Sigma-Delta run counts the Rounding network's ops too: its quantizers round the same values);
- the energy of each (Horowitz 2014, int32 by default);
- top-1 agreement (the Sigma-Delta network's argmax equals the original's) and top-5 agreement (it lies in the
  original's top 5): accuracy is measured against the original network, not labels;
- optionally (``grey=``, or flags given as ``decisive=``) which frames are *decisive*: the original's top-1
  survives ±2 grey levels of uniform input noise in each of 3 seeded draws (:mod:`.decisive`);
- optionally (``feature_distances=True``) how much each layer's input changes from one frame to the next: the
  L1 distance between adjacent frames' feature maps, each normalized to unit L1 norm, and their cosine
  similarity. The feature maps are the quantizers' inputs (the post-nonlinearity activations that feed each
  linear layer; the first is the image itself, "layer 0").

It only uses the network's public API: a deep copy of the network in ``"original"`` mode gives the reference
outputs and the feature maps (read from ``net.observations()`` after each call), the network itself runs in
``"sigma-delta"`` mode with op counting on.

What a user compares the network with comes from the same record (:mod:`.metrics`): agreement on the decisive
frames, the frame skipper at the network's cost (the original on every N-th frame, its answer held) and the
latency of both after each lasting change of the original's answer: :meth:`StreamEvaluation.summary`,
:meth:`~StreamEvaluation.frame_skip_curve`.

>>> import torch, sigmadelta
>>> from sigmadelta.eval import video
>>> from sigmadelta.testing import residual_cnn, correlated_stream
>>> net = sigmadelta.convert(residual_cnn(), torch.zeros(1, 3, 16, 16))
>>> net.set_scales({name: 8.0 for name in net.scales})
>>> frames = correlated_stream(12, (3, 16, 16), step_std=0.01)       # (T, B, 3, 16, 16)
>>> ev = video.evaluate_stream(net, frames, chunk=5, progress=False)
>>> ev.frames, ev.ops["original"].shape, bool(ev.ops["sigma_delta"][1:].mean() < ev.ops["rounding"][1:].mean())
(12, (12,), True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..accounting import EVENTS, HYBRID, HYBRID_ADDITIONS, HYBRID_DENSE, energy_per_op_pj
from ..net import SigmaDeltaNet
from .decisive import DECISIVE, NoiseJudge
from .metrics import (ChangeLatency, change_latency, class_agreement, held_answers, masked_mean, skip_cost,
                      skip_period, top_classes)
from .stream import run_stream

__all__ = ["StreamEvaluation", "evaluate_stream", "NETWORKS", "SKIP_CONVENTIONS", "CHANGE_RUN"]

# network name -> op kind of OpCounts that gives its cost
# "sigma_delta" counts the paper's additions (|n| per message n and connection), "sigma_delta_events" the peers' events
# (2 ops per nonzero message and connection): both for whichever delta scheme ran (accounting module docstring)
NETWORKS = {"original": "dense", "rounding": "rounding", "sigma_delta": "sigma_delta", "sigma_delta_hybrid": HYBRID,
            "sigma_delta_events": EVENTS}

# the frame skipper's period is matched to the delta network's ops in each convention: events is like for like (2 ops
# per message and connection, as the original's 2 ops per multiply-add); additions is the paper's count
SKIP_CONVENTIONS = {"events": "sigma_delta_events", "additions": "sigma_delta"}
CHANGE_RUN = 3  # a change of the original's answer counts when the new answer stays this many frames


# ---------------------------------------------------------------------------------------------------------
# results


@dataclass
class StreamEvaluation:
    """Per-frame results of one stream (plain data; ``B`` independent streams are averaged per frame).

    Attributes:
        frames: number of frames ``T``.
        layers: linear layer names, in graph order.
        ops: network (``"original"``, ``"rounding"``, ``"sigma_delta"``, ``"sigma_delta_hybrid"``: per layer and
            frame the cheaper of sigma-delta and dense, see :data:`~sigmadelta.accounting.HYBRID`) -> ops per
            frame ``[T]``.
        ops_per_layer: network -> layer -> ops per frame ``[T]`` (empty when run with ``per_layer=False``).
        top1_agree: ``[T]`` fraction of streams whose Sigma-Delta argmax equals the original's (0 or 1 for B = 1).
        top5_agree: ``[T]`` fraction of streams whose Sigma-Delta argmax is in the original's top 5.
        original_top5: ``[T, B, 5]`` the original's five best classes, best first.
        original_top1_prob: ``[T, B]`` the original's softmax probability of its best class.
        sigma_delta_top5: ``[T, B, 5]`` the Sigma-Delta network's five best classes.
        max_abs_logit_diff: ``[T]`` max |Sigma-Delta output − original output| per frame.
        feature_maps: quantizer names (one per feature map; the first is the input, "layer 0"), when computed.
        l1_distance: ``[L, T]`` L1 distance between the frame's and the previous frame's feature maps, each
            scaled to unit L1 norm (0: identical, 2: disjoint support); NaN at frame 0.
        cosine_similarity: ``[L, T]`` cosine similarity of adjacent frames' feature maps; NaN at frame 0.
        precision: energy table column used for :meth:`energy_nj`.
        hybrid_split: ``(additions, dense ops)`` per frame ``[T]`` of the hybrid, summed over layers: the ops of
            the layers that took the sigma-delta path and of those that ran dense (they give its energy).
        scheme: the delta scheme that ran.
        decisive: ``[T, B]`` whether the original's top-1 survives input noise (:data:`DECISIVE`), when judged.
    """

    frames: int
    layers: list[str]
    ops: dict[str, np.ndarray]
    ops_per_layer: dict[str, dict[str, np.ndarray]]
    top1_agree: np.ndarray
    top5_agree: np.ndarray
    original_top5: np.ndarray
    original_top1_prob: np.ndarray
    sigma_delta_top5: np.ndarray
    max_abs_logit_diff: np.ndarray
    feature_maps: list[str] = field(default_factory=list)
    l1_distance: np.ndarray | None = None
    cosine_similarity: np.ndarray | None = None
    precision: str = "int32"
    hybrid_split: tuple[np.ndarray, np.ndarray] | None = None
    scheme: str = "sigma-delta"  # the delta scheme that ran (net.set_scheme)
    decisive: np.ndarray | None = None

    def energy_nj(self, network: str) -> np.ndarray:
        """Energy per frame ``[T]`` in nJ of ``network`` (adds for the discretized ones; the original's ops are
        half multiplies, half adds; the hybrid per layer as the path it takes), from the Horowitz (2014) table
        at :attr:`precision`."""
        if network == "sigma_delta_hybrid":
            additions, dense = self.hybrid_split
            return (additions * energy_per_op_pj("sigma_delta", self.precision)
                    + dense * energy_per_op_pj("dense", self.precision)) / 1000.0
        kind = EVENTS if (network == "sigma_delta" and self.scheme == "threshold") else NETWORKS[network]
        return self.ops[network] * energy_per_op_pj(kind, self.precision) / 1000.0

    def cumulative(self, values: np.ndarray) -> np.ndarray:
        """Running mean over frames: ``out[t] = mean(values[:t + 1])``."""
        values = np.asarray(values, dtype=np.float64)
        return np.cumsum(values) / np.arange(1, len(values) + 1)

    def summary(self, start: int = 0, stop: int | None = None) -> dict:
        """Means over frames ``[start, stop)``: ops and energy per frame of each network, the reduction
        (original ops / Sigma-Delta ops; also for the Rounding network and the hybrid), the top-1/top-5 agreement,
        and beside them (:meth:`judged`): agreement on the decisive frames, the frame skipper at the same ops and
        the change latency of both. Numbers that cannot be had (no decisive frame, no change) are ``None``."""
        s = slice(start, self.frames if stop is None else stop)
        ops = {n: float(v[s].mean()) for n, v in self.ops.items()}
        return {
            "scheme": self.scheme,
            "frames": len(range(*s.indices(self.frames))),
            "ops_original_per_frame": ops["original"],
            "ops_rounding_per_frame": ops["rounding"],
            "ops_sigma_delta_per_frame": ops["sigma_delta"],
            "ops_sigma_delta_hybrid_per_frame": ops["sigma_delta_hybrid"],
            "ops_sigma_delta_events_per_frame": ops["sigma_delta_events"],
            "reduction": _ratio(ops["original"], ops["sigma_delta"]),
            "reduction_additions": _ratio(ops["original"], ops["sigma_delta"]),
            "reduction_events": _ratio(ops["original"], ops["sigma_delta_events"]),
            "reduction_rounding": _ratio(ops["original"], ops["rounding"]),
            "reduction_hybrid": _ratio(ops["original"], ops["sigma_delta_hybrid"]),
            "sigma_delta_vs_rounding": _ratio(ops["sigma_delta"], ops["rounding"]),
            "energy_nj_per_frame": {n: float(self.energy_nj(n)[s].mean()) for n in self.ops},
            "top1_agreement": float(self.top1_agree[s].mean()),
            "top5_agreement": float(self.top5_agree[s].mean()),
        } | self.judged(start, stop)

    def judged(self, start: int = 0, stop: int | None = None) -> dict:
        """What a user compares the network with, over frames ``[start, stop)`` (a stream of its own from
        ``start``; :mod:`.metrics`):

        - ``decisive_frames`` (frames x streams where the original's top-1 survives input noise; ``None`` when
          not judged), ``top1_agreement_decisive``, ``top5_agreement_decisive``;
        - ``frame_skip``: per convention of :data:`SKIP_CONVENTIONS`, the original on every ``n``-th frame of the
          segment, its answer held, ``n`` = floor(the network's reduction in that convention), so that the skipper
          spends at least the network's ops: ``n``, its ``reduction``, ``top1_agreement``, ``top5_agreement``,
          ``top1_agreement_decisive``;
        - ``change_latency``: the lasting changes of the original's top-1 (the new answer stays
          :data:`CHANGE_RUN` frames), the frames until the network (``sigma_delta``) and the events skipper
          (``frame_skip``) show the new answer, how many they never follow, and their agreement on the
          :data:`CHANGE_RUN` frames from each change (:class:`~sigmadelta.eval.metrics.ChangeLatency`).
        """
        s = slice(start, self.frames if stop is None else stop)
        frames = len(range(*s.indices(self.frames)))
        original, network = self.original_top5[s], self.sigma_delta_top5[s]  # (t, B, 5)
        flags = None if self.decisive is None else self.decisive[s]
        out = {"decisive_frames": None if flags is None else int(flags.sum())}
        for k, agree in zip(("top1", "top5"), class_agreement(network, original)):  # (t, B) each
            out[f"{k}_agreement_decisive"] = None if flags is None else _finite(masked_mean(agree, flags))
        total = self.ops["original"][s].sum()
        skip, periods = {}, {}
        for convention, network_name in SKIP_CONVENTIONS.items():
            n = skip_period(_ratio(total, self.ops[network_name][s].sum()), frames)
            periods[convention] = n
            skip[convention] = self._skipper(original, flags, n)
        out["frame_skip"] = skip
        delta = _pooled_latency(original[..., 0], network[..., 0])
        skipper = _pooled_latency(original[..., 0], held_answers(original, periods["events"])[..., 0])
        out["change_latency"] = {"changes": delta["changes"], "sigma_delta": delta, "frame_skip": skipper}
        return out

    def frame_skip_curve(self, start: int = 0, stop: int | None = None, periods=range(1, 101)) -> list[dict]:
        """The frame skipper on frames ``[start, stop)`` at every period ``n`` in ``periods`` (those up to the
        segment's length): ``n``, ``reduction`` (original ops / the skipper's), ``top1_agreement``,
        ``top5_agreement``, ``top1_agreement_decisive``."""
        s = slice(start, self.frames if stop is None else stop)
        original = self.original_top5[s]
        flags = None if self.decisive is None else self.decisive[s]
        return [self._skipper(original, flags, n) for n in periods if n <= len(original)]

    @staticmethod
    def _skipper(original: np.ndarray, flags: np.ndarray | None, n: int) -> dict:
        """The frame skipper at period ``n`` on one segment's original top classes ``[t, B, 5]``."""
        top1, top5 = class_agreement(held_answers(original, n), original)
        return dict(n=int(n), reduction=1.0 / skip_cost(len(original), n), top1_agreement=float(top1.mean()),
                    top5_agreement=float(top5.mean()),
                    top1_agreement_decisive=None if flags is None else _finite(masked_mean(top1, flags)))

    def layer_summary(self, start: int = 0, stop: int | None = None) -> dict[str, dict[str, float]]:
        """Layer -> mean ops per frame of each network over ``[start, stop)``, and Sigma-Delta / Rounding."""
        if not self.ops_per_layer:
            raise ValueError("no per-layer counts: this stream was evaluated with per_layer=False")
        s = slice(start, self.frames if stop is None else stop)
        out = {}
        for layer in self.layers:
            row = {n: float(self.ops_per_layer[n][layer][s].mean()) for n in self.ops_per_layer}
            row["sigma_delta_vs_rounding"] = _ratio(row["sigma_delta"], row["rounding"])
            out[layer] = row
        return out

    def frame_rows(self, classes: list[str] | None = None) -> list[dict]:
        """One JSON-ready dict per frame: index, ops of each network, agreement, and the original's answer (its
        best class, named when ``classes`` are given, and that class's probability) of the first stream, with
        ``decisive`` (whether that answer survives input noise; ``None`` when not judged)."""
        names = {"sigma_delta_events": "events"}  # "sigma_delta": the paper's additions; "events": 2 ops per message
        rows = []
        for t in range(self.frames):
            best = int(self.original_top5[t, 0, 0])
            original = {"class": best, "probability": float(self.original_top1_prob[t, 0])}
            if classes is not None:
                original["name"] = classes[best]
            original["decisive"] = None if self.decisive is None else bool(self.decisive[t, 0])
            rows.append({"index": t, "ops": {names.get(n, n): float(v[t]) for n, v in self.ops.items()},
                         "top1_agree": bool(self.top1_agree[t] >= 0.5), "top5_agree": bool(self.top5_agree[t] >= 0.5),
                         "original": original})
        return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def _finite(v: float) -> float | None:
    """``v``, or ``None`` for NaN (JSON has no NaN)."""
    return None if math.isnan(v) else v


def _pooled_latency(original: np.ndarray, network: np.ndarray) -> dict:
    """:func:`~sigmadelta.eval.metrics.change_latency` of each stream (``[t, B]`` answers), pooled over the
    streams: changes and misses summed, means weighted by the changes (and frames) they cover."""
    per = [change_latency(original[:, b], network[:, b], CHANGE_RUN, CHANGE_RUN) for b in range(original.shape[1])]
    changes = sum(p.changes for p in per)
    if not changes:
        return ChangeLatency(0, math.nan, 0, math.nan).to_dict() | {"mean_frames": None, "agreement_after": None}
    mean = lambda field: sum(getattr(p, field) * p.changes for p in per if p.changes) / changes
    return dict(changes=changes, mean_frames=mean("mean_frames"), missed=sum(p.missed for p in per),
                agreement_after=mean("agreement_after"))


# ---------------------------------------------------------------------------------------------------------
# running


class _FeatureDistances:
    """Adjacent-frame distances of every quantizer's input, accumulated chunk by chunk."""

    def __init__(self, net: SigmaDeltaNet):
        self.last: dict[str, torch.Tensor] = {}  # quantizer -> last frame's normalized map (B, N)
        self.l1: list[list[float]] = [[] for _ in net.quantizers]
        self.cos: list[list[float]] = [[] for _ in net.quantizers]

    @torch.no_grad()
    def update(self, steps: int, observations: dict) -> None:
        """Add the frames of the call that just ran: the original network's ``observations()``."""
        for i, (name, seen) in enumerate(observations.items()):
            x = seen.x.reshape(steps, -1, math.prod(seen.x.shape[1:])).double()  # (T, B, N)
            norm = x.abs().sum(-1, keepdim=True)
            unit = x / norm.clamp_min(1e-300)  # each frame's map scaled to unit L1 norm
            prev = torch.cat([self.last[name].unsqueeze(0), unit[:-1]]) if name in self.last else None
            if prev is None:  # the stream's first frame has no predecessor
                l1 = torch.full((steps, x.shape[1]), math.nan, dtype=torch.float64)
                cos = l1.clone()
                if steps > 1:
                    l1[1:] = (unit[1:] - unit[:-1]).abs().sum(-1)
                    cos[1:] = torch.nn.functional.cosine_similarity(unit[1:], unit[:-1], dim=-1)
            else:
                l1 = (unit - prev).abs().sum(-1)
                cos = torch.nn.functional.cosine_similarity(unit, prev, dim=-1)
            self.last[name] = unit[-1].clone()
            self.l1[i].extend(l1.mean(1).tolist())  # mean over the B streams
            self.cos[i].extend(cos.mean(1).tolist())


def _per_frame_ops(counts, per_layer: bool) -> dict:
    """``ops``, ``ops_per_layer`` and ``hybrid_split`` of a :class:`StreamEvaluation`, per stream, from counts."""
    batch = counts.batch_size
    return dict(ops={n: counts.per_step(kind) / batch for n, kind in NETWORKS.items()},
                ops_per_layer={n: {layer: v / batch for layer, v in counts.per_layer_step(kind).items()}
                               for n, kind in NETWORKS.items()} if per_layer else {},
                hybrid_split=tuple(counts.step_totals[part] / batch for part in (HYBRID_ADDITIONS, HYBRID_DENSE)))


@torch.no_grad()
def evaluate_stream(net: SigmaDeltaNet, frames: torch.Tensor | Iterable[torch.Tensor], *, chunk: int = 16,
                    feature_distances: bool = False, precision: str = "int32", progress: bool = True,
                    total: int | None = None, desc: str = "frames", per_layer: bool = True,
                    reference: SigmaDeltaNet | None = None, grey=None, decisive: np.ndarray | None = None
                    ) -> StreamEvaluation:
    """Run one stream through the Sigma-Delta network and the original, frame by frame, and record both.

    The stream starts from zero state (the network is reset) and is never reset again: clips spliced one after
    the other are one stream, as in the paper's test. ``net``'s scales, backend and delta dtype
    (:meth:`~sigmadelta.SigmaDeltaNet.set_delta_dtype`) are used as they are; its mode and counting (and
    ``per_step_counts``) are restored afterwards (which resets it).

    Args:
        net: a converted network whose output is ``[B, classes]`` (class scores or logits).
        frames: a clip ``[T, B, ...]`` (run ``chunk`` steps at a time), or an iterable of clips ``[t, B, ...]``
            (e.g. decoded and preprocessed lazily from a long video file).
        chunk: steps per clip-mode call for a tensor ``frames``; bounds memory only, results do not depend on it.
        feature_distances: also record the adjacent-frame distances of every layer's feature map (Figure 6).
        precision: the energy table's column (``"int32"`` as in the paper, ``"int8"``, ``"fp16"``, ``"fp32"``).
        progress, total, desc: a tqdm progress bar over frames, the frames expected (for an iterable), its label.
        per_layer: also keep each layer's ops per frame (:attr:`StreamEvaluation.ops_per_layer`,
            :meth:`~StreamEvaluation.layer_summary`); ``False`` keeps them summed over layers only. Memory grows
            with the stream by a few numbers a frame (ops, the top-5 classes), four more per layer with this.
        reference: the network whose ``"original"`` mode is the reference (copied); default ``net``. Pass the
            unmodified converted model when ``net``'s weights were fine-tuned.
        grey: one grey level in input units (:func:`~.decisive.grey_level`): judge which frames are decisive,
            running the reference's original on each chunk under :data:`DECISIVE` noise (3 more passes of it).
        decisive: the flags ``[T, B]`` of :func:`~.decisive.decisive_frames`, computed before (instead of ``grey``).

    Returns:
        A :class:`StreamEvaluation`.
    """
    from tqdm.auto import tqdm

    energy_per_op_pj("dense", precision)  # check the precision before running anything
    if grey is not None and decisive is not None:
        raise ValueError("give grey (judge the frames now) or decisive (flags judged before), not both")
    total = len(frames) if isinstance(frames, torch.Tensor) else total
    distances = _FeatureDistances(net) if feature_distances else None
    judge = None if grey is None else NoiseJudge(reference if reference is not None else net, grey,
                                                DECISIVE["level"], DECISIVE["draws"], DECISIVE["seed"])
    top_orig, top_sd, max_diff, prob = [], [], [], []

    def collect(clip, outputs, nets):
        original, out = outputs["original"], outputs["sigma-delta"]  # (t, B, classes)
        if distances is not None:
            distances.update(len(clip), nets["original"].observations())
        top_orig.append(top_classes(original))
        if judge is not None:
            judge.update(clip, top_orig[-1][..., 0])
        prob.append(original.softmax(-1).amax(-1).double())
        top_sd.append(top_classes(out))
        max_diff.append((out - original).abs().flatten(1).max(1).values)

    with tqdm(total=total, disable=not progress, desc=desc, unit="frame") as bar:
        counts = run_stream(net, frames, ("original", "sigma-delta"), chunk=chunk, reference=reference,
                            per_step_counts="layer" if per_layer else "total", on_chunk=collect,
                            progress=bar)["sigma-delta"]
    top_orig_t, top_sd_t = torch.cat(top_orig), torch.cat(top_sd)  # (T, B, k)
    top1, top5 = class_agreement(top_sd_t, top_orig_t)  # (T, B) each
    result = StreamEvaluation(
        frames=int(counts.steps), layers=list(counts.layers), **_per_frame_ops(counts, per_layer),
        top1_agree=top1.double().mean(1).numpy(), top5_agree=top5.double().mean(1).numpy(),
        original_top5=top_orig_t.numpy(), original_top1_prob=torch.cat(prob).numpy(), sigma_delta_top5=top_sd_t.numpy(),
        max_abs_logit_diff=torch.cat(max_diff).double().numpy(), precision=precision, scheme=counts.scheme,
        decisive=judge.result() if judge is not None else None if decisive is None else np.asarray(decisive, bool))
    if result.decisive is not None and result.decisive.shape != result.top1_agree.shape + (top1.shape[1],):
        raise ValueError(f"decisive flags {result.decisive.shape} do not fit the stream {tuple(top1.shape)}")
    if distances is not None:
        result.feature_maps = list(net.quantizers)
        result.l1_distance = np.array(distances.l1)
        result.cosine_similarity = np.array(distances.cos)
    return result
