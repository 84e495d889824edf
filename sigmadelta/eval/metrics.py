"""How well a network's answers agree with the original's, and what a user would compare them with: pure functions
of the networks' classes per frame.

Agreement is measured against the original network, never labels: top-1 agreement means the network's best class
is the original's best class; top-5 agreement means the network's best class lies among the original's five best.

>>> import torch
>>> original = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3, 0.4]])   # classes by score: 3, 1, 6, 5, 2, ...
>>> network = torch.tensor([[0.0, 0.9, 0.1, 0.2, 0.0, 0.0, 0.0]])    # best class 1
>>> top1, top5 = agreement(network, original)
>>> top1.tolist(), top5.tolist()
([False], [True])

Beside agreement over all frames, three views of the same answers:

- **decisive frames** (:func:`decisive`): the frames whose original top-1 survives small input noise (the
  evaluation draws ±2 grey levels, three times); there the original itself has an answer, and agreement means
  something;
- **the frame skipper** (:func:`held_answers`, :func:`skip_period`): the original run on every N-th frame (0, N,
  2N, ...), its answer held in between: the baseline every user has for free, at 1/N of the ops;
- **change latency** (:func:`answer_changes`, :func:`change_latency`): when the original's answer changes and
  stays, how many frames until another network follows.

>>> import numpy as np
>>> top1 = np.array([4, 4, 4, 7, 7, 7, 7, 2, 2, 2])      # the original's answer per frame: changes at 3 and 7
>>> held_answers(top1, 3).tolist()                        # runs frames 0, 3, 6, 9
[4, 4, 4, 7, 7, 7, 7, 7, 7, 2]
>>> answer_changes(top1).tolist()
[3, 7]
>>> change_latency(top1, held_answers(top1, 3))
ChangeLatency(changes=2, mean_frames=1.0, missed=0, agreement_after=0.6666666666666666)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["top_classes", "class_agreement", "agreement", "decisive", "held_answers", "skip_cost", "skip_period",
           "answer_changes", "change_latency", "ChangeLatency", "masked_mean"]


def top_classes(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The ``k`` best classes of each output, best first: ``[..., classes]`` -> ``[..., k]`` (fewer classes: all)."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def class_agreement(network_top: torch.Tensor, original_top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-5 agreement from the classes of :func:`top_classes`: ``network_top [..., ≥1]`` (its best class
    first), ``original_top [..., k]`` (the original's best first). Returns two boolean tensors ``[...]``."""
    best = network_top[..., :1]
    return best[..., 0] == original_top[..., 0], (best == original_top).any(-1)


def agreement(network: torch.Tensor, original: torch.Tensor, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 and top-``k`` agreement of the outputs ``network`` with ``original`` (``[..., classes]`` each):
    two boolean tensors ``[...]``."""
    return class_agreement(top_classes(network, 1), top_classes(original, k))


def masked_mean(values, mask) -> float:
    """Mean of ``values`` where ``mask`` is true; NaN where it is nowhere true."""
    values, mask = np.asarray(values, dtype=np.float64), np.asarray(mask, dtype=bool)
    return float(values[mask].mean()) if mask.any() else math.nan


# ---------------------------------------------------------------------------------------------------------
# decisive frames


def decisive(original_top1, noisy_top1) -> np.ndarray:
    """The frames where the original has an answer: its top-1 on the clean frame, ``original_top1 [T, ...]``, is
    its top-1 under every draw of input noise, ``noisy_top1 [D, T, ...]``. Returns booleans ``[T, ...]``.

    >>> decisive([3, 3, 5], [[3, 4, 5], [3, 3, 5]]).tolist()
    [True, False, True]
    """
    clean, noisy = np.asarray(original_top1), np.asarray(noisy_top1)
    if noisy.shape[1:] != clean.shape:
        raise ValueError(f"noisy answers {noisy.shape} do not match the clean ones {clean.shape} (draws first)")
    return (noisy == clean[None]).all(0)


# ---------------------------------------------------------------------------------------------------------
# the frame skipper


def held_answers(answers, n: int) -> np.ndarray:
    """What a network that runs every ``n``-th frame (frames 0, n, 2n, ...) and holds its answer in between shows:
    ``answers [T, ...]`` (anything per frame: a class, the top classes) -> ``out[t] = answers[(t // n) * n]``."""
    answers = np.asarray(answers)
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"the period n must be an integer >= 1, got {n!r}")
    return answers[(np.arange(len(answers)) // n) * n]


def skip_cost(frames: int, n: int) -> float:
    """The frame skipper's ops as a fraction of the original's over ``frames`` frames: ``ceil(frames / n) /
    frames`` (it runs frames 0, n, 2n, ...).

    >>> skip_cost(10, 3)
    0.4
    """
    return math.ceil(frames / n) / frames


def skip_period(reduction: float, frames: int) -> int:
    """The period of the frame skipper at the cost of a network that does ``reduction`` times fewer ops than the
    original over ``frames`` frames: ``floor(reduction)``, within ``[1, frames]``. The skipper then spends at least
    the network's ops (``skip_cost(frames, n) ≥ 1 / n ≥ 1 / reduction``): a network that agrees more than it does is
    ahead at equal cost, never by an accident of rounding the period.

    >>> skip_period(4.9, 100), skip_period(0.7, 100), skip_period(math.inf, 100)
    (4, 1, 100)
    """
    if not reduction > 0:
        raise ValueError(f"reduction must be > 0, got {reduction!r}")
    return int(min(frames, max(1, math.floor(reduction)))) if math.isfinite(reduction) else frames


# ---------------------------------------------------------------------------------------------------------
# change latency


def answer_changes(top1, min_run: int = 3) -> np.ndarray:
    """The frames ``t ≥ 1`` where the answer ``top1 [T]`` changes (``top1[t] != top1[t − 1]``) and then stays
    for at least ``min_run`` frames (``top1[t:t + min_run]`` all equal; the stream must hold them)."""
    top1 = np.asarray(top1)
    if top1.ndim != 1:
        raise ValueError(f"one stream's answers [T] expected, got shape {top1.shape}")
    starts = np.flatnonzero(top1[1:] != top1[:-1]) + 1
    return np.array([t for t in starts if t + min_run <= len(top1) and (top1[t:t + min_run] == top1[t]).all()],
                    dtype=np.int64)


@dataclass(frozen=True)
class ChangeLatency:
    """How a network follows the original's lasting changes of answer (:func:`change_latency`).

    Attributes:
        changes: lasting changes of the original's top-1.
        mean_frames: mean over the changes of the frames from the change until the network shows the new class
            (0: at once); a change never followed while the original keeps the class counts that whole run (so with
            ``missed`` > 0 this is a lower bound); NaN without changes.
        missed: changes the network never followed while the original kept the new class.
        agreement_after: top-1 agreement on the ``after`` frames from each change on, pooled; NaN without changes.
    """

    changes: int
    mean_frames: float
    missed: int
    agreement_after: float

    def to_dict(self) -> dict:
        return dict(changes=self.changes, mean_frames=self.mean_frames, missed=self.missed,
                    agreement_after=self.agreement_after)


def change_latency(original_top1, network_top1, min_run: int = 3, after: int = 3) -> ChangeLatency:
    """How fast ``network_top1 [T]`` follows the lasting changes of ``original_top1 [T]`` (:func:`answer_changes`
    with ``min_run``): per change at frame ``t`` to class ``c``, the frames until the network first answers ``c``,
    looked for while the original still answers ``c`` (its run), and the top-1 agreement on frames ``t … t + after
    − 1``."""
    original, network = np.asarray(original_top1), np.asarray(network_top1)
    if original.shape != network.shape:
        raise ValueError(f"the answers differ in shape: {original.shape} and {network.shape}")
    changes = answer_changes(original, min_run)
    latencies, missed, agree = [], 0, []
    for t in changes:
        run = t + np.argmax(np.append(original[t:] != original[t], True))  # first frame the original moves on
        hits = np.flatnonzero(network[t:run] == original[t])
        latencies.append(hits[0] if len(hits) else run - t)
        missed += not len(hits)
        agree.extend((network[t:t + after] == original[t:t + after]).tolist())
    return ChangeLatency(changes=len(changes), mean_frames=float(np.mean(latencies)) if latencies else math.nan,
                         missed=missed, agreement_after=float(np.mean(agree)) if agree else math.nan)
