"""The minibatches of scale learning (:mod:`sigmadelta.learn.optimize`), and each process's share of one under torchrun.

A :class:`Batch` holds the inputs of one SGD step and the original network's outputs for its counted samples. For
the rounding cost the inputs are samples ``(B, ...)``. For the sigma-delta cost they are a window ``(T', B, ...)``
of ``B`` streams, whose first ``context`` steps (0 or 1) are only the Δ reference of the next and are not counted.
Under torchrun every process builds the same minibatches and runs :func:`share` of each: the loss is a sum over
counted rows, so the processes' gradients add up to the one-process gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..net import SigmaDeltaNet

__all__ = ["Batch", "train_batches", "eval_items", "rows", "share", "original_outputs"]




@dataclass
class Batch:
    """One SGD step's inputs and the original's outputs for its counted samples."""

    x: torch.Tensor  # rounding: (B, ...); sigma_delta: (T', B, ...), the first `context` steps only as Δ reference
    target: torch.Tensor  # original outputs of the counted samples: (R, ...)
    context: int = 0


def _unpacked(data, what: str) -> list[torch.Tensor]:
    found = [d[0] if isinstance(d, (tuple, list)) else d for d in data]
    if not found:
        raise ValueError(f"{what} is empty")
    return found


@torch.no_grad()
def original_outputs(net: SigmaDeltaNet, frames: torch.Tensor, chunk: int) -> torch.Tensor:
    """The original network's outputs for ``frames`` ``(N, ...)``; ``net`` is in original mode."""
    return torch.cat([net.graph_module(frames[i:i + chunk]) for i in range(0, len(frames), chunk)])


def check_shape(x: torch.Tensor, net: SigmaDeltaNet, lead: int, what: str) -> None:
    """Refuse ``x`` unless it is ``[T, B, *sample]`` (``lead`` 2) or ``[N, *sample]`` (1) in the net's dtype."""
    expected = "[" + ", ".join(["T", "B"][2 - lead:] + [str(s) for s in net.sample_shape]) + "]"
    if not isinstance(x, torch.Tensor) or x.dim() != lead + len(net.sample_shape) or \
            tuple(x.shape[lead:]) != net.sample_shape or x.dtype != net.dtype:
        got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what}: expected tensors {expected} of {net.dtype}, got {got}")


def train_batches(net, data, batch_size: int, temporal: bool, chunk: int) -> list[Batch]:
    """The training minibatches: samples cut by ``batch_size``, windows of one long stream ``[T, B, ...]`` (each after
    the first with the step before it as context), or the items of an iterable as they are."""
    lead = 2 if temporal else 1
    if isinstance(data, torch.Tensor):
        check_shape(data, net, lead, "data")
        frames = data.flatten(0, 1) if temporal else data
        target = original_outputs(net, frames, chunk)
        if not temporal:  # minibatches of samples
            return [Batch(data[i:i + batch_size], target[i:i + batch_size]) for i in range(0, len(data), batch_size)]
        target = target.unflatten(0, data.shape[:2])  # (T, B, ...)
        return [Batch(data[max(t - 1, 0):t + batch_size], target[t:t + batch_size].flatten(0, 1), int(t > 0))
                for t in range(0, len(data), batch_size)]  # windows of one long stream
    batches = []
    for x in _unpacked(data, "data"):
        check_shape(x, net, lead, "data item")
        batches.append(Batch(x, original_outputs(net, x.flatten(0, 1) if temporal else x, chunk)))
    return batches


def eval_items(net, data, temporal: bool, chunk: int) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
    """``(x, original output, reset before)`` per evaluation call; x is ``(T, B, ...)``."""
    lead = 2 if temporal else 1
    if isinstance(data, torch.Tensor):
        check_shape(data, net, lead, "eval_data")
        clips = [data[i:i + chunk] for i in range(0, len(data), chunk)]
        if not temporal:  # samples: each chunk is one step of B independent samples
            return [(c.unsqueeze(0), original_outputs(net, c, chunk), True) for c in clips]
        return [(c, original_outputs(net, c.flatten(0, 1), chunk), i == 0) for i, c in enumerate(clips)]
    out = []
    for x in _unpacked(data, "eval_data"):
        check_shape(x, net, lead, "eval_data item")
        out.append((x if temporal else x.unsqueeze(0),
                    original_outputs(net, x.flatten(0, 1) if temporal else x, chunk), True))
    return out


def rows(batch: Batch, temporal: bool) -> int:
    """``R``, the minibatch's counted samples (all processes together)."""
    return (len(batch.x) - batch.context) * batch.x.shape[1] if temporal else len(batch.x)


def share(batch: Batch, temporal: bool, rank: int, world: int) -> Batch | None:
    """This process's part of the minibatch under torchrun (``None``: no rows). Samples are split; a window of
    clips is split by stream when there are at least as many streams as processes, else by time step, each part
    with the step before it as its Δ reference (recomputed with the same scales, so the cost is the same)."""
    if world == 1:
        return batch
    if not temporal:
        x, target = batch.x.tensor_split(world)[rank], batch.target.tensor_split(world)[rank]
        return Batch(x, target) if len(x) else None
    steps, streams = len(batch.x) - batch.context, batch.x.shape[1]
    target = batch.target.unflatten(0, (steps, streams))
    if streams >= world:
        mine = torch.arange(streams).tensor_split(world)[rank]
        return Batch(batch.x[:, mine], target[:, mine].flatten(0, 1), batch.context)
    mine = torch.arange(steps).tensor_split(world)[rank]
    if not len(mine):
        return None
    first, end = int(mine[0]), int(mine[-1]) + 1
    context = int(first > 0 or batch.context > 0)
    return Batch(batch.x[batch.context + first - context:batch.context + end], target[first:end].flatten(0, 1),
                 context)
