"""The sparse engine's steps for the ops between linear layers: row by row where the op allows it (elementwise and
per-channel ops, residual adds, constant padding), else a dense recompute when an input changed."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..rewrite.patterns import (BINARY_FUNCTIONS, BINARY_METHODS, CONSTANT_PAD_MODULES, DROPOUT_MODULES,
                               ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ELEMENTWISE_MODULES)
from ._indexmaps import pad_rows
from .values import ALL, Step, Value, set_dense

__all__ = ["RowwiseStep", "BinaryStep", "PadStep", "DenseOpStep", "plan_op", "not_inplace", "resolve"]


class RowwiseStep(Step):
    """An op that acts on each row on its own (elementwise, or per channel): ``y[D] = f(x[D])``."""

    kind = "rowwise"

    def __init__(self, name: str, fn, x: Value, out: Value, out_fn=None):
        super().__init__(name)
        self.fn, self.x, self.out = fn, x, out
        self.out_fn = out_fn  # fn(x, out=...) writing straight into the buffer, for the dense path
        self.dense_into = None  # set when the only consumer is a constant pad: write into its interior instead
        self.row_view = (-1, x.channels) + (1,) * (len(x.shape) - 2) if x.row_layout else None

    def run(self, fresh: bool) -> None:
        dirty = self.x.dirty
        if dirty is None and not fresh:
            self.out.dirty = None
        elif fresh or dirty is ALL:
            if self.out_fn is not None:
                # fused with a following pad, our own buffer goes stale: only that pad reads it, row by row,
                # and only rows this step wrote on a sparse frame
                self.out_fn(self.x.buf, self.out.buf if self.dense_into is None else self.dense_into)
                self.out.dirty = ALL
            else:
                set_dense(self.out, self.fn(self.x.buf))
        else:
            y = self.fn(self.x.rows.index_select(0, dirty).view(self.row_view))  # (n, C, 1, ...)
            self.out.own()
            self.out.rows.index_copy_(0, dirty, y.view(dirty.numel(), -1))
            self.out.dirty = dirty


class BinaryStep(Step):
    """An elementwise op of two same-shaped values (a residual add): ``y[D] = f(a[D], b[D])``, ``D = D_a ∪ D_b``."""

    kind = "binary"

    def __init__(self, name: str, fn, a: Value, b: Value, out: Value, fn_out=None):
        super().__init__(name)
        self.fn, self.a, self.b, self.out = fn, a, b, out
        self.fn_out = fn_out if out.is_tensor and out.storage is not None else None  # fn(a, b, out=...)
        self.mask = torch.zeros(out.nrows, dtype=torch.bool) if out.row_layout else None

    def run(self, fresh: bool) -> None:
        da, db = self.a.dirty, self.b.dirty
        if da is None and db is None and not fresh:
            self.out.dirty = None
            return
        if fresh or da is ALL or db is ALL or self.mask is None:
            if self.fn_out is not None:
                self.fn_out(self.a.buf, self.b.buf, out=self.out.buf)
                self.out.dirty = ALL
            else:
                set_dense(self.out, self.fn(self.a.buf, self.b.buf))
            return
        if da is None or db is None:
            dirty = db if da is None else da
        else:
            self.mask.index_fill_(0, da, True).index_fill_(0, db, True)
            dirty = self.mask.nonzero().squeeze(1)
            self.mask.zero_()
        y = self.fn(self.a.rows.index_select(0, dirty), self.b.rows.index_select(0, dirty))
        self.out.own()
        self.out.rows.index_copy_(0, dirty, y)
        self.out.dirty = dirty


class PadStep(Step):
    """Constant padding of the spatial dimensions: row ``i`` of the input lands on row ``map[i]`` of the output.

    The border is filled once (at reset) and never written again.
    """

    kind = "pad"

    def __init__(self, name: str, x: Value, out: Value, pads_before, interior, value: float):
        super().__init__(name)
        self.x, self.out, self.value, self.interior = x, out, value, interior
        self.map = pad_rows(x.shape[2:], pads_before, out.shape[2:], x.shape[0])  # (R_in,)
        self.fused = False
        self.reset()

    def reset(self) -> None:
        self.out.storage.fill_(self.value)

    def run(self, fresh: bool) -> None:
        dirty = self.x.dirty
        if dirty is None and not fresh:
            self.out.dirty = None
        elif fresh or dirty is ALL:
            if not self.fused:  # else the producer already wrote the interior
                self.out.buf[self.interior].copy_(self.x.buf)
            self.out.dirty = ALL
        else:
            rows = self.map.index_select(0, dirty)
            self.out.rows.index_copy_(0, rows, self.x.rows.index_select(0, dirty))
            self.out.dirty = rows

    def plan_nbytes(self) -> int:
        return self.map.numel() * self.map.element_size()


class DenseOpStep(Step):
    """Any other per-sample op, recomputed densely when one of its inputs changed."""

    kind = "dense-op"

    def __init__(self, name: str, call, inputs: list[Value], out: Value):
        super().__init__(name)
        self.call, self.inputs, self.out = call, inputs, out

    def run(self, fresh: bool) -> None:
        if fresh or any(v.dirty is not None for v in self.inputs):
            set_dense(self.out, self.call())
        else:
            self.out.dirty = None


# ---------------------------------------------------------------------------------------------------------
# which ops run row by row

_OUT_BINARY = {operator.add: torch.add, torch.add: torch.add, operator.sub: torch.sub, torch.sub: torch.sub,
               operator.mul: torch.mul, torch.mul: torch.mul}


def out_fn(node: fx.Node, mod, kwargs: dict):
    """``f(x, out)`` writing into ``out`` for the commonest activations, so their dense path allocates nothing."""
    plain_call = node.op == "call_function" and len(node.args) == 1
    relu = (mod is not None and type(mod) is nn.ReLU) or (plain_call and node.target in (F.relu, torch.relu))
    relu6 = (mod is not None and type(mod) is nn.ReLU6) or (plain_call and node.target is F.relu6)
    if relu:
        return lambda x, out: torch.clamp_min(x, 0, out=out)
    if relu6:
        return lambda x, out: torch.clamp(x, 0, 6, out=out)
    return None


def not_inplace(module: nn.Module) -> nn.Module:
    """A shallow copy with ``inplace=False``: in-place ops would overwrite a persistent buffer (a state)."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module


def is_tensor_node(a, values: dict) -> bool:
    return isinstance(a, fx.Node) and values[a].is_tensor



def resolve(arg, values: dict):
    """Replace graph nodes in ``arg`` (nested tuples, lists, dicts) by their current values."""
    return fx.node.map_arg(arg, lambda n: values[n].value)


def rowwise_fn(node: fx.Node, mod, args, kwargs: dict):
    """``f`` with ``y = f(x)`` row by row for an elementwise or per-channel op of one input, else ``None``."""
    if mod is not None and isinstance(mod, ELEMENTWISE_MODULES + DROPOUT_MODULES) and not mod.training:
        return not_inplace(mod)
    elif mod is not None and isinstance(mod, nn.modules.batchnorm._BatchNorm) and not mod.training \
            and mod.track_running_stats:
        return mod
    elif mod is not None and isinstance(mod, nn.PReLU):
        return mod
    elif node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        if "inplace" in kwargs:
            kwargs["inplace"] = False
        rest, target = args[1:], node.target
        return lambda t, target=target, rest=rest, kw=kwargs: target(t, *rest, **kw)  # noqa: E731
    elif node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
        rest, name = args[1:], node.target
        return lambda t, name=name, rest=rest, kw=kwargs: getattr(t, name)(*rest, **kw)  # noqa: E731
    elif (node.op == "call_function" and node.target in BINARY_FUNCTIONS) or \
            (node.op == "call_method" and node.target in BINARY_METHODS):
        target = node.target if node.op == "call_function" else BINARY_METHODS[node.target]
        if len(args) == 2 and not isinstance(args[1], (fx.Node, torch.Tensor)):
            c = args[1]
            return lambda t, target=target, c=c, kw=kwargs: target(t, c, **kw)  # noqa: E731
    return None


def plan_op(node: fx.Node, mod, values: dict, out: Value, consumers) -> Step:
    """The step for one non-linear node: row by row where the op allows it, else a dense recompute."""
    args, kwargs = node.args, dict(node.kwargs)
    tensor_args = [a for a in args if is_tensor_node(a, values)]
    x = values[args[0]] if args and is_tensor_node(args[0], values) else None
    others_constant = not any(isinstance(a, fx.Node) for a in list(args[1:]) + list(kwargs.values()))
    same_shape = x is not None and out.is_tensor and x.shape == out.shape

    if same_shape and others_constant and x.row_layout == out.row_layout:
        fn = rowwise_fn(node, mod, args, kwargs)
        if fn is not None:
            return RowwiseStep(node.name, fn, x, out, out_fn(node, mod, kwargs))

    # scalar ∘ x (e.g. 1 - x)
    if (node.op == "call_function" and node.target in BINARY_FUNCTIONS and len(args) == 2 and not kwargs
            and not isinstance(args[0], fx.Node) and is_tensor_node(args[1], values)):
        y = values[args[1]]
        if out.is_tensor and y.shape == out.shape and y.row_layout == out.row_layout \
                and not isinstance(args[0], torch.Tensor):
            c, target = args[0], node.target
            return RowwiseStep(node.name, lambda t, c=c, target=target: target(c, t), y, out)

    # residual add and friends: two same-shaped values
    binary = ((node.op == "call_function" and node.target in BINARY_FUNCTIONS)
              or (node.op == "call_method" and node.target in BINARY_METHODS))
    if binary and len(args) == 2 and len(tensor_args) == 2 and out.is_tensor:
        a, b = values[args[0]], values[args[1]]
        if a.shape == b.shape == out.shape:
            target = node.target if node.op == "call_function" else BINARY_METHODS[node.target]
            fn_out = _OUT_BINARY.get(target) if not kwargs else None
            return BinaryStep(node.name, lambda u, v, target=target, kw=kwargs: target(u, v, **kw), a, b, out, fn_out)

    pad = constant_pad(node, mod, x, out)
    if pad is not None:
        return PadStep(node.name, x, out, *pad)

    # anything else: recompute densely when an input changed
    call = dense_call(node, mod, values)
    inputs = [values[n] for n in node.all_input_nodes if n in values]
    return DenseOpStep(node.name, call, inputs, out)


def constant_pad(node: fx.Node, mod, x: Value | None, out: Value):
    """``(pads_before, interior, value)`` if ``node`` pads only spatial dims with a constant, else ``None``."""
    if x is None or not x.row_layout or not out.is_tensor or out.rows is None:
        return None
    if mod is not None and isinstance(mod, CONSTANT_PAD_MODULES):
        pad, value = mod.padding, float(getattr(mod, "value", 0.0))
    elif node.op == "call_function" and node.target is F.pad:
        names = ("input", "pad", "mode", "value")
        kw = {**dict(zip(names, node.args)), **node.kwargs}
        if kw.get("mode", "constant") != "constant" or isinstance(kw.get("value"), fx.Node):
            return None
        pad, value = kw["pad"], float(kw.get("value") or 0.0)
    else:
        return None
    nsp = len(x.shape) - 2
    pad = tuple(pad)
    if len(pad) > 2 * nsp or any(p < 0 for p in pad):
        return None
    pad = pad + (0,) * (2 * nsp - len(pad))
    before = [pad[2 * (nsp - 1 - i)] for i in range(nsp)]  # F.pad lists the last dim first
    interior = (slice(None), slice(None)) + tuple(slice(b, b + n) for b, n in zip(before, x.shape[2:]))
    return before, interior, value


def dense_call(node: fx.Node, mod, values: dict):
    """A closure that runs ``node`` on the current values."""
    args, kwargs = node.args, node.kwargs
    if node.op == "call_module":
        fn = not_inplace(mod)
        return lambda: fn(*resolve(args, values), **resolve(kwargs, values))
    if node.op == "call_method":
        name = node.target
        return lambda: getattr(resolve(args[0], values), name)(*resolve(args[1:], values),
                                                                **resolve(kwargs, values))
    target = node.target
    return lambda: target(*resolve(args, values), **resolve(kwargs, values))
