"""Error measures between a discretized network's outputs and the original's (the ``e`` of the paper's
section 4), as elementwise terms: a sample's error is the sum of its terms over the last dims.

===========  =====================================================================================
name         terms (outputs ``a`` of the discretized network, ``t`` of the original; last dim = classes)
===========  =====================================================================================
kl           KL(approx ‖ original) of ``softmax(a)``, ``softmax(t)``: outputs are *logits* (scale learning)
distill-kl   KL(original ‖ approx) of the softmaxes: the distillation loss (fine-tuning), weighing every class
             by the original's probability, so the runner-up classes keep a gradient
kl-probs     ``a (log a − log t)``: outputs are probabilities (a model ending in softmax)
l2, l1       ``(a − t)²``, ``|a − t|`` on raw outputs (the random network)
l2-softmax   ``(softmax(a) − softmax(t))²``: L2 on probabilities of a logit model (the VGG run)
l1-softmax   ``|softmax(a) − softmax(t)|``
===========  =====================================================================================

>>> import torch
>>> a, t = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 0.0]])
>>> float(per_sample(error_terms("kl")(a, t)).sum())
0.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ERRORS", "DISTILLATION_ERRORS", "ErrorFn", "error_terms", "per_sample"]

ErrorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _kl(approx, target):  # outputs are logits
    log_p, log_q = approx.log_softmax(-1), target.log_softmax(-1)
    return log_p.exp() * (log_p - log_q)


def _distill_kl(approx, target):  # outputs are logits; the original's distribution weighs the terms
    log_p, log_q = target.log_softmax(-1), approx.log_softmax(-1)
    return log_p.exp() * (log_p - log_q)


def _kl_probs(approx, target):  # outputs are probabilities already
    tiny = torch.finfo(approx.dtype).tiny
    return approx * (approx.clamp_min(tiny).log() - target.clamp_min(tiny).log())


_ERROR_TERMS: dict[str, ErrorFn] = {
    "kl": _kl,
    "distill-kl": _distill_kl,
    "kl-probs": _kl_probs,
    "l2": lambda a, t: (a - t) ** 2,
    "l2-softmax": lambda a, t: (a.softmax(-1) - t.softmax(-1)) ** 2,
    "l1": lambda a, t: (a - t).abs(),
    "l1-softmax": lambda a, t: (a.softmax(-1) - t.softmax(-1)).abs(),
}
ERRORS = tuple(_ERROR_TERMS)
DISTILLATION_ERRORS = ("distill-kl", "l2-softmax")  # the errors fine-tuning can distill with


def error_terms(error: str | ErrorFn) -> ErrorFn:
    """The elementwise error ``f(approx, target)`` named ``error`` (see the table above).

    A callable is used as is: it gets ``approx`` ``[n, R, ...]`` and ``target`` ``[1, R, ...]`` and returns
    terms broadcast like ``approx``.
    """
    if callable(error):
        return error
    if error not in _ERROR_TERMS:
        raise ValueError(f"unknown error {error!r}; choose from {ERRORS} or pass a callable")  # configs check first
    return _ERROR_TERMS[error]


def per_sample(terms: torch.Tensor) -> torch.Tensor:
    """``[n, R, ...]`` elementwise terms -> ``[n, R]`` per-sample sums."""
    return terms.reshape(*terms.shape[:2], -1).sum(-1)
