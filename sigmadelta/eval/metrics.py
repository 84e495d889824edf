"""How well a network's answers agree with the original's: the one definition of top-1 and top-5 agreement.

Agreement is measured against the original network, never labels: top-1 agreement means the network's best class
is the original's best class; top-5 agreement means the network's best class lies among the original's five best.

>>> import torch
>>> original = torch.tensor([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3, 0.4]])   # classes by score: 3, 1, 6, 5, 2, ...
>>> network = torch.tensor([[0.0, 0.9, 0.1, 0.2, 0.0, 0.0, 0.0]])    # best class 1
>>> top1, top5 = agreement(network, original)
>>> top1.tolist(), top5.tolist()
([False], [True])
"""

from __future__ import annotations

import torch

__all__ = ["top_classes", "class_agreement", "agreement"]


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
