"""Checks of the values a user gives a :class:`~sigmadelta.SigmaDeltaNet` (scales, scheme parameters): each
returns the value in the form the network stores, or raises an error that names the quantizer and what it got."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch

__all__ = ["per_quantizer", "log_scale"]


def per_quantizer(value, names: list[str], what: str) -> dict[str, float]:
    """One value for every quantizer, or a mapping by quantizer name (names left out: an error)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise KeyError(f"{what} per quantizer: unknown {unknown[:4]}, missing {missing[:4]}; the quantizers "
                           f"are {names[:4]}{'...' if len(names) > 4 else ''}")
        return {n: float(value[n]) for n in names}
    return dict.fromkeys(names, float(value))


def log_scale(name: str, k, param: torch.Tensor) -> torch.Tensor:
    """``log k`` shaped like the log-scale ``param``, or a TypeError/ValueError naming the scale ``name``."""
    if isinstance(k, bool) or not isinstance(k, (numbers.Real, torch.Tensor, list, tuple)) and not hasattr(
            k, "__array__"):
        raise TypeError(f"scale {name!r} must be a real number or a tensor of them, got {type(k).__name__} {k!r}")
    try:
        t = k.detach() if isinstance(k, torch.Tensor) else torch.as_tensor(k)  # to see its dtype
        if t.dtype == torch.bool or t.is_complex():
            raise TypeError(f"a {type(k).__name__} of {t.dtype}")
        t = t.to("cpu", torch.float64) if isinstance(k, torch.Tensor) else torch.as_tensor(k, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:  # float64: 1e300 is not inf yet
        raise TypeError(f"scale {name!r} must be a real number or a tensor of them, got {type(k).__name__} "
                        f"({e})") from None
    if t.shape != param.shape and t.numel() != 1:
        raise ValueError(f"scale {name!r}: shape {tuple(t.shape)} does not fit {tuple(param.shape)}")
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"scale {name!r} must be finite and > 0, got {t.tolist()}")
    log_k = t.to(param.dtype).log()
    if not torch.isfinite(log_k).all():
        raise ValueError(f"scale {name!r} = {t.tolist()} is outside the range of {param.dtype}")
    return log_k.expand(param.shape).to(param.device)
