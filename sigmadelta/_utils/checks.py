"""Checks of what a user gives a :class:`~sigmadelta.SigmaDeltaNet`: frames and clips, scales, scheme parameters. Each
returns the value in the form the network stores, or raises an error that names what it got and where."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import torch

from ..errors import StreamError

__all__ = ["per_quantizer", "log_scale", "stream_input"]


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


def stream_input(x, what: str, lead: int, sample_shape: tuple[int, ...], dtype: torch.dtype,
                 batch_size: int | None) -> None:
    """Refuse a frame (``lead`` 1: ``[B, *sample]``) or clip (``lead`` 2: ``[T, B, *sample]``) a network cannot take:
    not a tensor, another dtype or shape, empty, NaN or inf, or another number of streams than the stream has."""
    expected = ("[T, B, " if lead == 2 else "[B, ") + ", ".join(map(str, sample_shape)) + "]"
    if not isinstance(x, torch.Tensor):
        raise StreamError(f"{what} must be a torch.Tensor {expected}, got {type(x).__name__}")
    if x.dtype != dtype:
        raise StreamError(f"{what} has dtype {x.dtype}; the network was converted for {dtype} "
                          f"(convert a model of another dtype, or cast the input with .to({dtype}))")
    if x.dim() != lead + len(sample_shape) or tuple(x.shape[lead:]) != sample_shape:
        raise StreamError(f"{what} has shape {tuple(x.shape)}; expected {expected}")
    if x.shape[lead - 1] == 0 or (lead == 2 and x.shape[0] == 0):
        raise StreamError(f"{what} of shape {tuple(x.shape)} is empty")
    # a NaN or inf makes the float64 sum so, in one pass (5x cheaper than isfinite(x).all() per frame); a sum that
    # overflows from finite values (float64 input only) is told apart by the full check
    if not torch.isfinite(x.sum(dtype=torch.float64)) and not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise StreamError(f"{what} contains NaN or inf (first at index {bad}); state left unchanged")
    batch = x.shape[lead - 1]
    if batch_size is not None and batch != batch_size:
        raise StreamError(f"{what} has {batch} streams but this stream has {batch_size}; "
                          "call net.reset() before starting streams of another batch size")
