"""Temporal-MNIST (paper-notes 7.2, the paper's Appendix D): MNIST reordered so that similar digits are adjacent.

The order is greedy. Start at sample 0. Keep a buffer of the next ``buffer`` unused samples, in the original
order. Move to the buffered sample with the smallest L1 pixel distance to the current one (ties go to the
earliest sample), and refill its slot with the next unused sample. Each split is reordered on its own, and the
labels move with the images. The resulting sequence is one long "video" in which consecutive frames change
little, which is what a Sigma-Delta network exploits.

The permutation is cached in the user cache (see :func:`sigmadelta.data.cache_dir`), keyed by the split, the
buffer size and a hash of the images, so it is computed once per machine (about 10 s for the training split).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

from .._utils.digest import digest
from .._utils.files import atomic_write
from .._utils.cache import cache_dir
from .._utils.threads import one_thread
from .mnist import load_mnist

__all__ = ["temporal_mnist", "temporal_mnist_order", "mnist_clip"]

_VERSION = 1  # bump when the algorithm changes, to invalidate cached orders


def temporal_mnist(split: str, buffer: int = 1000, root: str | os.PathLike | None = None, *,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` in the greedy nearest-neighbour order of the paper's Temporal-MNIST.

    Args:
        split: ``"train"`` or ``"test"``.
        buffer: how many upcoming samples the greedy walk may choose from (the paper: 1000).
        root: passed to :func:`~sigmadelta.data.load_mnist`.
        progress: show a progress bar while computing an order that is not cached yet.

    Returns:
        ``(images, labels)`` as :func:`~sigmadelta.data.load_mnist` returns them, reordered.
    """
    images, labels = load_mnist(split, root)
    order = _cached_order(images, split, buffer, progress)
    return images[order], labels[order]


def temporal_mnist_order(images: np.ndarray, buffer: int = 1000, *, progress: bool = False) -> np.ndarray:
    """The greedy L1 order of ``images`` (any ``[N, ...]`` array): a permutation ``[N]`` of int64 indices.

    Vectorised over the buffer: each step computes the distances from the current image to all buffered images
    at once. Distances are summed in float32, which is exact for MNIST (integer pixels, 784 · 255 < 2**24).
    """
    if buffer < 1:
        raise ValueError(f"buffer must be >= 1, got {buffer}")
    n = len(images)
    order = np.zeros(n, dtype=np.int64)  # order[0] = 0: the walk starts at the first sample
    if n < 2:
        return order
    x = torch.from_numpy(np.ascontiguousarray(images).reshape(n, -1)).to(torch.float32)  # (N, D)
    size = min(buffer, n - 1)
    buf = x[1:size + 1].clone()  # (size, D): the buffered images, one per slot
    ids = torch.arange(1, size + 1)  # (size,): the sample each slot holds
    dead = torch.zeros(size)  # (size,): +inf once a slot has no sample left to hold
    diff, dist = torch.empty_like(buf), torch.empty(size)  # scratch, reused every step
    never = torch.iinfo(torch.int64).max
    next_id, cur = size + 1, x[0]
    with one_thread(), torch.inference_mode():
        for t in tqdm(range(1, n), desc="Temporal-MNIST order", disable=not progress, mininterval=1.0):
            torch.sub(buf, cur, out=diff)
            torch.sum(diff.abs_(), dim=1, out=dist)  # (size,) L1 distances
            dist += dead
            best = torch.where(dist == dist.min(), ids, never).argmin()  # a tie goes to the earliest sample
            order[t] = chosen = int(ids[best])
            cur = x[chosen]
            if next_id < n:  # refill the slot with the next unused sample
                buf[best], ids[best] = x[next_id], next_id
                next_id += 1
            else:
                dead[best], ids[best] = float("inf"), never
    return order


def mnist_clip(split: str = "test", temporal: bool = True, max_frames: int | None = None, *,
               buffer: int = 1000, root: str | os.PathLike | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """An MNIST split as one stream for a converted MLP: ``(clip [T, 1, 784] float32 in [0, 1], labels [T])``.

    Args:
        split: ``"train"`` or ``"test"``.
        temporal: Temporal-MNIST order (``True``) or the original order.
        max_frames: keep only the first frames of the stream.
        buffer: Temporal-MNIST buffer size.
        root: passed to :func:`~sigmadelta.data.load_mnist`.
    """
    images, labels = temporal_mnist(split, buffer, root) if temporal else load_mnist(split, root)
    images, labels = images[:max_frames], labels[:max_frames]
    clip = torch.from_numpy(images).reshape(len(images), 1, 28 * 28).float() / 255  # (T, 1, 784)
    return clip, torch.from_numpy(labels)


def _cached_order(images: np.ndarray, split: str, buffer: int, progress: bool) -> np.ndarray:
    path = cache_dir() / f"temporal-mnist-v{_VERSION}-{split}-buffer{buffer}-{digest(images)}.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                order = f["order"]
            if order.shape == (len(images),) and np.array_equal(np.sort(order), np.arange(len(images))):
                return order
        except (OSError, KeyError, ValueError):
            pass  # unreadable or stale: recompute and overwrite
    order = temporal_mnist_order(images, buffer, progress=progress)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, order=order, buffer=buffer)

    atomic_write(path, write)
    return order
