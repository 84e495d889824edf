"""The event engine's plan: the converted ``torch.fx`` graph walked once into steps with persistent buffers.

What the walk fuses away (each only where it is exact):

- an activation that clamps (ReLU, ReLU6, hardtanh, clamp), hardswish or hardsigmoid becomes a :class:`Source`
  read through it: the quantizers, pooling and averages that read it apply it on the fly;
- identities (dropout in eval mode, ``nn.Identity``, ``contiguous``) and reshapes that keep every row (a
  flatten of ``[B, C, 1, 1]``) are the same rows;
- a concatenation along channels of layer outputs, each read only by it (directly or through one clamping
  activation), becomes one storage the layers write into, slice by slice (``max`` and clamps commute, so a
  clamp after the concatenation is the per-channel clamp of its parts);
- a constant zero padding read only by a quantizer whose layers are all convolutions, and a flatten read only by
  a quantizer, fold into that quantizer: the padding into the convolutions' taps (a zero border quantizes to
  zero messages in every scheme, forever), the flatten into the fully connected layer's weight layout.

Everything else is a step per node (:mod:`~sigmadelta.runtime.events.ops`), torch's dense recompute as the last
resort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx

from ...core.modules import Quantizer, SigmaDeltaLinear
from ._kquant import CLAMP, HARDSWISH
from ._maps import pad_rows, pool_windows, reach_of
from .graph import (activation_of, is_add, is_alias, is_channel_cat, is_flatten, is_global_mean, not_inplace,
                    pool_args, zero_pad_of)
from .layers import LayerStep
from .ops import (AddStep, ApplyStep, CatStep, DenseOpStep, InputStep, MeanStep, PadStep, PoolStep,
                  storage_for)
from .quantize import ImageInput, QuantizeStep
from .values import Source

__all__ = ["Plan", "build_plan"]


@dataclass
class Plan:
    """The steps of one frame in graph order, and what the engine reads: quantizers, layers, the storages to
    clear each frame, the input and the output."""

    steps: list
    quantizers: list[QuantizeStep]
    layers: list[LayerStep]
    storages: list
    input: InputStep | None
    image: ImageInput | None
    output: Source


# ---------------------------------------------------------------------------------------------------------
# the walk


class _Walk:
    """State of one walk over the graph (see :func:`build_plan`)."""

    def __init__(self, gm: fx.GraphModule, net, batch: int):
        self.gm, self.net = gm, net
        self.modules = dict(gm.named_modules())
        self.dtype = np.dtype(str(net.dtype).removeprefix("torch."))
        example = torch.zeros((batch, *net.sample_shape), dtype=net.dtype)
        self.examples = example_values(gm, self.modules, example)
        self.values: dict[fx.Node, object] = {}
        self.steps, self.quantizers, self.layers, self.storages = [], [], [], []
        self.quantize_of: dict[fx.Node, QuantizeStep] = {}
        self.input_step, self.image = None, None
        self.folded: dict[fx.Node, tuple] = {}  # pad/flatten node -> ("pad", amounts) / ("flatten",)
        self.slots: dict[fx.Node, tuple[fx.Node, int]] = {}  # layer node -> (concatenation node, first channel)
        self.cat_storage: dict[fx.Node, object] = {}
        self.materialized: dict[tuple, Source] = {}

    def mod(self, node: fx.Node):
        return self.modules.get(node.target) if node.op == "call_module" else None

    def storage(self, name: str, shape) -> object:
        st = storage_for(name, tuple(shape), self.dtype)
        self.storages.append(st)
        return st

    def add(self, step) -> None:
        self.steps.append(step)

    # --- pre-pass: folds and in-place concatenations ---------------------------------------------------

    def prepass(self) -> None:
        for node in self.gm.graph.nodes:
            mod = self.mod(node)
            users = list(node.users)
            q_users = len(users) == 1 and isinstance(self.mod(users[0]), Quantizer)
            pad = zero_pad_of(node, mod)
            if pad is not None and q_users and pad[1] == 0.0 and all(
                    isinstance(self.mod(u), SigmaDeltaLinear) and self.mod(u).kind != "linear"
                    and not isinstance(self.mod(u).conv_args.get("padding", 0), str) for u in users[0].users):
                self.folded[node] = ("pad", pad[0])
            elif q_users and is_flatten(node, mod, self.examples):
                self.folded[node] = ("flatten",)
            elif node.op == "call_function" and is_channel_cat(node, self.examples):
                self._plan_cat(node)

    def _plan_cat(self, cat: fx.Node) -> None:
        parts = (dict(zip(("tensors", "dim"), cat.args)) | dict(cat.kwargs))["tensors"]
        layers, c0 = [], 0
        for part in parts:
            if len(part.users) != 1:
                return
            layer = part
            if not isinstance(self.mod(part), SigmaDeltaLinear):
                spec = activation_of(part, self.mod(part))
                if spec is None or spec[0] != CLAMP or not isinstance(part.args[0], fx.Node):
                    return
                layer = part.args[0]
                if len(layer.users) != 1 or not isinstance(self.mod(layer), SigmaDeltaLinear):
                    return
            layers.append((layer, c0))
            c0 += self.examples[part].shape[1]
        for layer, first in layers:
            self.slots[layer] = (cat, first)

    # --- sources ---------------------------------------------------------------------------------------

    def source(self, node: fx.Node) -> Source:
        value = self.values[node]
        if value is _IMAGE:  # a consumer that needs the frame as rows
            value = self.values[node] = self._input_rows(node)
        return value

    def _input_rows(self, node: fx.Node) -> Source:
        shape = self.examples[node].shape
        src = Source(self.storage(node.name, shape), 0, shape)
        self.input_step = InputStep(node.name, src)
        self.steps.insert(0, self.input_step)
        return src

    def materialize(self, src: Source, name: str) -> Source:
        """``src`` with its activation applied and stored (once per source)."""
        if src.is_identity:
            return src
        key = (id(src.storage), src.c0, src.act, src.lo.tobytes(), src.hi.tobytes())
        if key not in self.materialized:
            out = Source(self.storage(name, src.shape), 0, src.shape)
            self.add(ApplyStep(name, src, out))
            self.materialized[key] = out
        return self.materialized[key]

    # --- one node --------------------------------------------------------------------------------------

    def visit(self, node: fx.Node) -> None:
        mod, ex = self.mod(node), self.examples.get(node)
        if node.op == "placeholder":
            if ex.dim() >= 3:
                self.image = ImageInput(tuple(ex.shape))
                self.values[node] = _IMAGE
            else:
                self.values[node] = self._input_rows(node)
        elif node.op == "get_attr" or (node.op != "output" and not isinstance(ex, torch.Tensor)):
            self.values[node] = ex  # a constant, or a size fixed by the plan's batch
        elif node in self.folded:
            self.values[node] = _FOLDED
        elif isinstance(mod, Quantizer):
            self._quantizer(node, mod)
        elif isinstance(mod, SigmaDeltaLinear):
            self._layer(node, mod)
        elif is_alias(node, mod):
            self.values[node] = self.source(node.args[0])
        elif (spec := activation_of(node, mod)) is not None and self._rows_value(node.args[0]):
            src = self.source(node.args[0])
            if not src.is_identity:
                src = self.materialize(src, node.name + "_in")
            lo = np.full(src.channels, spec[1], self.dtype)
            hi = np.full(src.channels, spec[2], self.dtype)
            self.values[node] = src.with_act(spec[0], lo, hi)
        else:
            self._op(node, mod, ex)

    def _rows_value(self, node) -> bool:
        return isinstance(node, fx.Node) and isinstance(self.values.get(node), Source)

    def _quantizer(self, node: fx.Node, mod: Quantizer) -> None:
        x = node.args[0]
        fold = self.folded.get(x)
        pad, flatten = (fold[1] if fold and fold[0] == "pad" else None), bool(fold and fold[0] == "flatten")
        inner = x.args[0] if fold else x
        if self.values.get(inner) is _IMAGE and not flatten:
            source = self.image
        else:
            source = self.source(inner)
        step = QuantizeStep(mod.name, mod, source, (pad, flatten))
        step.allocate(self.dtype)
        self.quantize_of[node] = step
        self.quantizers.append(step)
        self.add(step)

    def _layer(self, node: fx.Node, mod: SigmaDeltaLinear) -> None:
        q = self.quantize_of[node.args[0]]
        shape = tuple(self.examples[node].shape)
        if node in self.slots:
            cat, c0 = self.slots[node]
            if cat not in self.cat_storage:
                self.cat_storage[cat] = self.storage(cat.name, self.examples[cat].shape)
            out = Source(self.cat_storage[cat], c0, shape)
        else:
            out = Source(self.storage(node.name, shape), 0, shape)
        step = LayerStep(mod, q, out, pad=q.pad)
        self.layers.append(step)
        self.add(step)
        self.values[node] = out

    def _op(self, node: fx.Node, mod, ex) -> None:
        name = node.name
        x = node.args[0] if node.args else None
        if node.op == "output":
            return
        if node in self.cat_storage:  # built in place by its layers
            parts = [self.source(p) for p in (dict(zip(("tensors", "dim"), node.args)) | dict(node.kwargs))["tensors"]]
            lo, hi = np.concatenate([p.lo for p in parts]), np.concatenate([p.hi for p in parts])
            self.values[node] = Source(self.cat_storage[node], 0, tuple(ex.shape), CLAMP, lo, hi)
            return
        if self._rows_value(x) and ex.dim() == 2 and self.source(x).pixels == 1 and \
                ex.shape[1] == self.source(x).channels:  # a flatten/view that keeps every row
            self.values[node] = self.source(x).reshaped(tuple(ex.shape))
            return
        out = Source(self.storage(name, ex.shape), 0, tuple(ex.shape)) if ex.dim() >= 1 else None
        if is_channel_cat(node, self.examples) and all(self._rows_value(p) for p in node.args[0]):
            self.add(CatStep(name, [self.source(p) for p in node.args[0]], out))
        elif is_add(node, self.examples) and all(self._rows_value(v) for v in node.args):
            a, b = (self.materialize(self.source(v), f"{name}_{v.name}") for v in node.args)
            self.add(AddStep(name, a, b, out))
        elif (pool := pool_args(node, mod)) is not None and self._rows_value(x):
            src = self.source(x)
            if src.act == HARDSWISH:  # not monotone: max and the activation do not commute
                src = self.materialize(src, name + "_in")
            d = ex.dim() - 2
            per_dim = [tuple(v) if isinstance(v, (tuple, list)) else (v,) * d for v in pool]
            windows = pool_windows(src.spatial, tuple(ex.shape[2:]), *per_dim)
            self.add(PoolStep(name, src, out, windows, reach_of(*windows, src.pixels)))
        elif is_global_mean(node, mod, self.examples) and self._rows_value(x):
            self.add(MeanStep(name, self.source(x), out))  # out: one row [C] per stream
        elif (pad := zero_pad_of(node, mod)) is not None and self._rows_value(x) and ex.dim() >= 3:
            src = self.source(x)
            d = ex.dim() - 2
            before = [pad[0][2 * (d - 1 - i)] if 2 * (d - 1 - i) < len(pad[0]) else 0 for i in range(d)]
            if min(pad[0]) < 0:
                self.add(DenseOpStep(name, node, self._callable(node, mod), self.dense_inputs(node), self.resolve, out))
            else:
                self.add(PadStep(name, src, out, pad_rows(src.spatial, before, tuple(ex.shape[2:])), pad[1]))
        else:
            self.add(DenseOpStep(name, node, self._callable(node, mod), self.dense_inputs(node), self.resolve, out))
        self.values.setdefault(node, out)

    def _callable(self, node: fx.Node, mod):
        if node.op == "call_module":
            return not_inplace(mod)
        if node.op == "call_method":
            return lambda obj, *args, name=node.target, **kw: getattr(obj, name)(*args, **kw)
        if "inplace" in node.kwargs:
            return lambda *args, fn=node.target, **kw: fn(*args, **(kw | {"inplace": False}))
        return node.target

    def dense_inputs(self, node: fx.Node) -> list[Source]:
        return [self.source(n) for n in node.all_input_nodes if isinstance(self.examples.get(n), torch.Tensor)
                and n.op != "get_attr"]

    def resolve(self, node: fx.Node):
        """The current value of ``node`` for a dense op: a tensor (activation applied) or a constant."""
        value = self.values[node]
        return value.logical() if isinstance(value, Source) else value


_IMAGE, _FOLDED = object(), object()  # markers: the raw input frame; a node folded into its quantizer


def build_plan(gm: fx.GraphModule, net, batch: int) -> Plan:
    """Walk ``net``'s graph once and build the steps of one frame for ``batch`` streams."""
    walk = _Walk(gm, net, batch)
    walk.prepass()
    output = None
    for node in gm.graph.nodes:
        try:
            walk.visit(node)
        except Exception as e:
            shape = tuple(walk.examples[node].shape) if isinstance(walk.examples.get(node), torch.Tensor) else None
            raise type(e)(f"event engine: cannot plan node {node.name!r} ({node.op} {node.target}, output shape "
                          f"{shape}): {e}") from None
        if node.op == "output":
            output = walk.source(node.args[0])
    return Plan(walk.steps, walk.quantizers, walk.layers, walk.storages, walk.input_step, walk.image, output)


def example_values(gm: fx.GraphModule, modules: dict, example: torch.Tensor) -> dict:
    """Every node's value on ``example`` with the quantizers as identities and the layers as plain linear
    ops (no state is touched): it fixes buffer shapes."""
    env: dict[fx.Node, object] = {}
    with torch.no_grad():
        for node in gm.graph.nodes:
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "placeholder":
                env[node] = example
            elif node.op == "get_attr":
                obj = gm
                for part in node.target.split("."):
                    obj = getattr(obj, part)
                env[node] = obj
            elif node.op == "call_module":
                mod = modules[node.target]
                if isinstance(mod, Quantizer):
                    env[node] = args[0]
                elif isinstance(mod, SigmaDeltaLinear):
                    env[node] = mod.linear(args[0], mod.weight, mod.bias)
                else:
                    env[node] = not_inplace(mod)(*args, **kwargs)
            elif node.op == "call_method":
                env[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "call_function":
                env[node] = node.target(*args, **kwargs)
    return env
