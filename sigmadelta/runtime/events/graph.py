"""What a node of the converted graph is, for the event engine's plan: activations it can apply on the fly,
identities, folds (zero padding, flatten), max-pooling, global means, residual adds, channel concatenations."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ...rewrite.patterns import CONSTANT_PAD_MODULES, DROPOUT_MODULES
from ._kquant import CLAMP, HARDSIGMOID, HARDSWISH

__all__ = ["activation_of", "is_alias", "zero_pad_of", "is_flatten", "pool_args", "is_global_mean", "is_add",
           "is_channel_cat", "not_inplace"]

_INF = float("inf")


def activation_of(node: fx.Node, mod) -> tuple[int, float, float] | None:
    """``(act, lo, hi)`` when ``node`` is an activation a kernel applies on the fly, else ``None``."""
    if mod is not None:
        if type(mod) is nn.ReLU:
            return CLAMP, 0.0, _INF
        if type(mod) is nn.ReLU6:
            return CLAMP, 0.0, 6.0
        if type(mod) is nn.Hardtanh:
            return CLAMP, float(mod.min_val), float(mod.max_val)
        if type(mod) is nn.Hardswish:
            return HARDSWISH, -_INF, _INF
        if type(mod) is nn.Hardsigmoid:
            return HARDSIGMOID, -_INF, _INF
        return None
    args, kwargs, target = node.args, dict(node.kwargs), node.target
    kwargs.pop("inplace", None)
    if any(isinstance(a, fx.Node) for a in list(args[1:]) + list(kwargs.values())):
        return None
    if node.op == "call_function" and target in (F.relu, torch.relu) or node.op == "call_method" and target == "relu":
        return (CLAMP, 0.0, _INF) if len(args) == 1 and not kwargs else None
    if node.op == "call_function" and target is F.relu6:
        return (CLAMP, 0.0, 6.0) if len(args) == 1 and not kwargs else None
    if node.op == "call_function" and target is F.hardswish:
        return (HARDSWISH, -_INF, _INF) if len(args) == 1 and not kwargs else None
    if node.op == "call_function" and target is F.hardsigmoid:
        return (HARDSIGMOID, -_INF, _INF) if len(args) == 1 and not kwargs else None
    bounds = None
    if node.op == "call_function" and target is F.hardtanh:
        bounds = _call_args(args[1:], kwargs, ("min_val", "max_val"), (-1.0, 1.0))
    elif (node.op == "call_function" and target in (torch.clamp, torch.clip)) or (
            node.op == "call_method" and target in ("clamp", "clip")):
        bounds = _call_args(args[1:], kwargs, ("min", "max"), (None, None))
    elif node.op == "call_method" and target == "clamp_min":
        bounds = _call_args(args[1:], kwargs, ("min",), (None,)) + [None]
    elif node.op == "call_method" and target == "clamp_max":
        bounds = [None] + _call_args(args[1:], kwargs, ("max",), (None,))
    if bounds is None or not all(b is None or isinstance(b, (int, float)) for b in bounds):
        return None
    lo, hi = bounds
    return CLAMP, -_INF if lo is None else float(lo), _INF if hi is None else float(hi)


def _call_args(args, kwargs, names, defaults) -> list | None:
    if len(args) > len(names) or set(kwargs) - set(names):
        return None
    values = dict(zip(names, defaults)) | dict(zip(names, args)) | kwargs
    return [values[n] for n in names]


def is_alias(node: fx.Node, mod) -> bool:
    """Ops that return their input unchanged in eval mode."""
    if mod is not None:
        return isinstance(mod, (nn.Identity,) + DROPOUT_MODULES) and not mod.training
    if node.op == "call_method" and node.target == "contiguous" and len(node.args) == 1:
        return True
    return node.op == "call_function" and node.target in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d) and \
        not node.kwargs.get("training", len(node.args) > 2 and node.args[2])


def zero_pad_of(node: fx.Node, mod) -> tuple | None:
    """``(amounts, value)`` (``F.pad`` order) of a constant padding of the spatial dimensions, else ``None``."""
    if mod is not None and isinstance(mod, CONSTANT_PAD_MODULES):
        return tuple(mod.padding), float(getattr(mod, "value", 0.0))
    if node.op == "call_function" and node.target is F.pad:
        kw = dict(zip(("input", "pad", "mode", "value"), node.args)) | dict(node.kwargs)
        if kw.get("mode", "constant") == "constant" and not isinstance(kw.get("value"), fx.Node):
            return tuple(kw["pad"]), float(kw.get("value") or 0.0)
    return None


def is_flatten(node: fx.Node, mod, examples) -> bool:
    """A flatten of ``[B, C, *S]`` into ``[B, C·prod(S)]`` (a module, ``torch.flatten``/method, or a view/reshape
    to ``[B, -1]``)."""
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node) or not isinstance(examples.get(x), torch.Tensor):
        return False
    shape_in, y = examples[x].shape, examples[node]
    return (isinstance(y, torch.Tensor) and y.dim() == 2 and len(shape_in) >= 3 and y.shape[0] == shape_in[0]
            and y.is_contiguous() and (isinstance(mod, nn.Flatten) or node.target in (
                torch.flatten, "flatten", "view", "reshape", torch.reshape)))


def pool_args(node: fx.Node, mod) -> tuple | None:
    """``(kernel, stride, padding, dilation)`` of a max-pooling without indices, else ``None``."""
    if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and not mod.return_indices:
        return mod.kernel_size, mod.stride or mod.kernel_size, mod.padding, mod.dilation
    if node.op == "call_function" and node.target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        kw = dict(zip(names, node.args)) | dict(node.kwargs)
        if not kw.get("return_indices", False):
            return kw["kernel_size"], kw.get("stride") or kw["kernel_size"], kw.get("padding", 0), kw.get("dilation", 1)
    return None


def is_global_mean(node: fx.Node, mod, examples) -> bool:
    """A mean over every spatial dimension: ``AdaptiveAvgPool*d(1)``, ``x.mean(dims)``, ``torch.mean``."""
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node) or not isinstance(examples.get(x), torch.Tensor) or examples[x].dim() < 3:
        return False
    d = examples[x].dim()
    size = None
    if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)):
        size = mod.output_size
    elif node.target in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
        size = (dict(zip(("input", "output_size"), node.args)) | dict(node.kwargs))["output_size"]
    if size is not None:
        return all(s == 1 for s in (size if isinstance(size, (tuple, list)) else (size,) * (d - 2)))
    if node.target in ("mean", torch.mean):
        kw = dict(zip(("input", "dim", "keepdim"), node.args)) | dict(node.kwargs)
        dims = kw.get("dim")
        if dims is None or "dtype" in kw:
            return False
        dims = {int(v) % d for v in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        return dims == set(range(2, d))
    return False


def is_add(node: fx.Node, examples) -> bool:
    """``a + b`` of two tensors of one shape (a residual add)."""
    if not ((node.op == "call_function" and node.target in (operator.add, torch.add)) or (
            node.op == "call_method" and node.target == "add")) or node.kwargs or len(node.args) != 2:
        return False
    a, b = node.args
    return all(isinstance(v, fx.Node) and isinstance(examples.get(v), torch.Tensor) for v in (a, b)) and \
        examples[a].shape == examples[b].shape == examples[node].shape


def is_channel_cat(node: fx.Node, examples) -> bool:
    if node.target not in (torch.cat, torch.concat) or node.kwargs.keys() - {"dim"}:
        return False
    kw = dict(zip(("tensors", "dim"), node.args)) | dict(node.kwargs)
    parts = kw["tensors"]
    out = examples[node]
    return (isinstance(parts, (list, tuple)) and all(isinstance(p, fx.Node) for p in parts)
            and isinstance(out, torch.Tensor) and out.dim() >= 2 and int(kw.get("dim", 0)) % out.dim() == 1)


def not_inplace(module: nn.Module) -> nn.Module:
    """A shallow copy with ``inplace=False``: an in-place op would overwrite a persistent buffer."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module
