"""Decisive frames: the frames of a stream where the original network itself has an answer.

A frame is decisive when the original's top-1 on it is also its top-1 under each of :data:`DECISIVE` ``draws`` draws
of uniform input noise of ``±level`` grey levels on every input value (one grey level: one 8-bit step through the
model's preprocessing, :func:`grey_level`). The noise of draw ``d`` on frame ``t`` comes from a generator seeded by
``(seed, d, t)`` alone, so no flag depends on how the stream is chunked. Agreement on these frames
(:class:`~sigmadelta.eval.video.StreamEvaluation`) is beside agreement over all frames: where the original's answer
is a near tie, agreement with it measures noise.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..net import SigmaDeltaNet
from .metrics import decisive
from .stream import chunks_of

__all__ = ["DECISIVE", "NoiseJudge", "decisive_frames", "grey_level", "input_noise"]

DECISIVE = dict(level=2.0, draws=3, seed=0)


def grey_level(preprocess) -> torch.Tensor:
    """The model-input change of one 8-bit grey level, per channel (``[C, 1, 1]``), through ``preprocess``
    (frames ``[N, H, W, 3]`` uint8 -> inputs ``[N, C, H, W]``; a model bundle is accepted too). The preprocessing is
    affine in the pixels: a uniform frame of 101 minus one of 100, the median over each channel's values (away from
    any border effect of resizing)."""
    preprocess = getattr(preprocess, "preprocess", preprocess)
    zero, one = (preprocess(np.full((1, 64, 64, 3), v, dtype=np.uint8)) for v in (100, 101))
    step = (one - zero)[0]
    return step.flatten(1).median(1).values.view(-1, *[1] * (step.dim() - 1))


def input_noise(x: torch.Tensor, grey, *, draw: int, frame: int, level: float = DECISIVE["level"],
                seed: int = DECISIVE["seed"]) -> torch.Tensor:
    """The noise that judges whether frame number ``frame`` (``x``, ``[B, ...]``) is decisive, in draw ``draw``:
    uniform in ``±level · grey`` on every input value (``grey``: one grey level in input units, a number or per
    channel), from a generator seeded by ``(seed, draw, frame)`` alone."""
    g = torch.Generator().manual_seed(((seed * 1024 + draw) << 32) + frame)
    return (torch.rand(x.shape, generator=g, dtype=x.dtype) * 2 - 1) * level * torch.as_tensor(grey, dtype=x.dtype)


class NoiseJudge:
    """The original's top-1 under input noise, chunk by chunk: ``update(clip, original_top1)`` adds a chunk's
    flags. The noise of draw ``d`` on frame ``t`` is uniform in ``±level · grey`` from a generator seeded by
    ``(seed, d, t)``, so no flag depends on the chunking."""

    def __init__(self, net: SigmaDeltaNet, grey, level: float, draws: int, seed: int):
        self.net = net.dense_copy("original")  # not counting, state of its own
        self.grey, self.level, self.draws, self.seed = grey, float(level), int(draws), int(seed)
        self.seen = 0
        self.flags: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, clip: torch.Tensor, original_top1: torch.Tensor) -> None:
        """``clip [t, B, ...]`` and the original's clean top-1 ``[t, B]``."""
        noisy = []
        for d in range(self.draws):
            x = torch.stack([f + input_noise(f, self.grey, draw=d, frame=self.seen + i, level=self.level,
                                             seed=self.seed) for i, f in enumerate(clip)])
            noisy.append(self.net.run(x).argmax(-1))
        self.flags.append(torch.as_tensor(decisive(original_top1.numpy(), torch.stack(noisy).numpy())))
        self.seen += len(clip)

    def result(self) -> np.ndarray:
        return torch.cat(self.flags).numpy()


@torch.no_grad()
def decisive_frames(net: SigmaDeltaNet, frames: torch.Tensor | Iterable[torch.Tensor], grey, *, chunk: int = 16,
                    level: float = DECISIVE["level"], draws: int = DECISIVE["draws"],
                    seed: int = DECISIVE["seed"]) -> np.ndarray:
    """Which frames of a stream are decisive for ``net``'s original network: its top-1 on the clean frame is its
    top-1 under each of ``draws`` draws of uniform noise of ``±level`` grey levels on every input value
    (``grey``: one grey level in input units, e.g. :func:`grey_level`). Returns booleans ``[T, B]``; the same flags
    as :func:`evaluate_stream` with ``grey`` (pass them back as its ``decisive`` to judge many settings of one
    stream without rerunning the noise)."""
    judge = NoiseJudge(net, grey, level, draws, seed)
    clean = net.dense_copy("original")
    for clip in (chunks_of(frames, chunk) if isinstance(frames, torch.Tensor) else frames):
        judge.update(clip, clean.run(clip).argmax(-1))
    if not judge.seen:
        raise ValueError("the stream holds no frame")
    return judge.result()
