"""Trace a model, check every node, fold BatchNorm, and insert the Sigma-Delta modules.

The pipeline (see ``rewrite/README.md`` for a printed before/after)::

    nn.Module ──trace──▶ GraphModule ──check──▶ (every node known, per-sample) ──fold BN──▶
        ──insert──▶ x ─▶ Quantizer ─▶ SigmaDeltaLinear ─▶ per-sample ops ─▶ Quantizer ─▶ ...

One quantizer sits on each value that feeds a linear op, shared when the value feeds several of them.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

from ..errors import ConversionError
from ..core.modules import Quantizer, SigmaDeltaLinear
from .patterns import (
    BATCHNORM_MODULES,
    DIM_CHECKED,
    LINEAR_FUNCTIONS,
    LINEAR_MODULES,
    op_name,
    is_per_sample,
    supported_ops_text,
)

__all__ = ["RewriteResult", "rewrite"]

LAYER_ROOT, QUANTIZER_ROOT = "sd_layers", "sd_quantizers"


@dataclass
class RewriteResult:
    graph_module: fx.GraphModule
    layers: dict[str, SigmaDeltaLinear]  # layer name -> module, in graph order
    quantizers: dict[str, Quantizer]  # quantizer name -> module, in graph order
    layer_inputs: dict[str, str]  # layer name -> name of the quantizer feeding it
    sample_shape: tuple[int, ...]  # the input's shape without the batch dimension
    dtype: torch.dtype


class _Tracer(fx.Tracer):
    def __init__(self, leaf_types: tuple[type, ...]):
        super().__init__()
        self.leaf_types = leaf_types

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # nn.Conv*/nn.Linear subclasses from user code are traced through to F.conv*/F.linear: both forms are
        # handled, and tracing through also captures any padding their forward adds.
        return isinstance(m, self.leaf_types) or super().is_leaf_module(m, qualname)


def rewrite(model: nn.Module, example_input: torch.Tensor, *, per_channel_scales: bool = False,
            extra_ops=()) -> RewriteResult:
    """Convert ``model`` into a GraphModule with quantizers and Sigma-Delta linear layers. See ``convert``."""
    if not isinstance(model, nn.Module):
        raise ConversionError(f"convert() takes an nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1 or not example_input.is_floating_point():
        desc = (f"{example_input.dtype} tensor of shape {tuple(example_input.shape)}"
                if isinstance(example_input, torch.Tensor) else type(example_input).__name__)
        raise ConversionError(f"example_input must be a floating-point tensor [batch, ...]; got {desc}")

    model = copy.deepcopy(model)  # never touch the user's model
    if model.training:
        warnings.warn("convert(): the model is in training mode; converting a copy in eval mode "
                      "(BatchNorm uses running statistics, dropout is off)", stacklevel=3)
    model.eval()

    leaf_types = tuple(t for t in extra_ops if isinstance(t, type))
    try:
        graph = _Tracer(leaf_types).trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}: {type(e).__name__}: {e}. "
                              "Control flow that depends on tensor values cannot be traced; mark such "
                              "submodules as leaves with convert(..., extra_ops=[TheirClass]) if they are "
                              "per-sample ops.") from None
    gm = fx.GraphModule(model, graph, type(model).__name__)
    modules = dict(gm.named_modules())

    shapes = _check_nodes(gm, modules, example_input, extra_ops)
    _fold_batchnorm(gm, modules, shapes)
    layers, quantizers, layer_inputs = _insert_sigma_delta(gm, modules, shapes, per_channel_scales)
    if not layers:
        raise ConversionError(f"{type(model).__name__} has no linear op (nn.Linear, nn.Conv*d, F.linear, F.conv*d) "
                              "to quantize")
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.graph.lint()
    gm.recompile()
    return RewriteResult(gm, layers, quantizers, layer_inputs, tuple(example_input.shape[1:]), example_input.dtype)


# ---------------------------------------------------------------------------------------------------------
# checking


def _where(node: fx.Node) -> str:
    """'node x (op) from module a.b' for error messages."""
    stack = node.meta.get("nn_module_stack") or {}
    path = next(reversed(stack.values()))[0] if stack else None
    op = node.target if node.op in ("call_module", "call_method") else op_name(node.target)
    return f"node '{node.name}' ({node.op} {op})" + (f" from module '{path}'" if path else "")


def _linear_kind(node: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    if node.op == "call_module":
        mod = modules[node.target]
        for cls, kind in LINEAR_MODULES.items():
            if isinstance(mod, cls):
                return kind
    if node.op == "call_function":
        return LINEAR_FUNCTIONS.get(node.target)
    return None


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's value.

    With ``batch`` set, it also checks that every value computed from the input keeps the batch as its
    leading dimension; otherwise the op mixes samples (and clip mode, which stacks T frames into the batch,
    would be wrong). Checking node by node names the op at fault, not a later op that fails on its output.
    """

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.extra_traceback = False  # our errors already name the node
        self.depends = _depends_on_input(gm)

    def run_node(self, n: fx.Node):
        try:
            out = super().run_node(n)
        except Exception as e:
            context = self.what
            raise ConversionError(f"running the model on {context} failed at {_where(n)}: "
                                  f"{type(e).__name__}: {e}") from None
        if self.batch is not None and n in self.depends and n.op != "output":
            for t in _tensors(out):
                if t.dim() == 0 or t.shape[0] != self.batch:
                    raise ConversionError(f"{_where(n)} mixes the samples of a batch: with a batch of {self.batch} "
                                          f"it gives shape {tuple(t.shape)}. Every op must keep the batch as the "
                                          "leading dimension and treat samples independently.")
        self.values[n] = out
        return out

    def record(self, x: torch.Tensor, check_batch: bool = False, what: str = "example_input") -> dict[fx.Node, object]:
        self.values, self.batch, self.what = {}, (x.shape[0] if check_batch else None), what
        with torch.no_grad():
            self.run(x)
        return self.values


def _check_nodes(gm: fx.GraphModule, modules, example_input: torch.Tensor, extra_ops) -> dict[fx.Node, object]:
    """Refuse any node that is not a known op, and any op that mixes samples of the batch.

    Returns the value of each node on ``example_input`` (their shapes drive folding and fan-out plans).
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"the model's forward takes {len(placeholders)} inputs "
                              f"({', '.join(n.name for n in placeholders)}); convert() supports exactly one tensor")
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr") or _linear_kind(node, modules):
            continue
        op = modules[node.target] if node.op == "call_module" else node.target
        if not is_per_sample(op, extra_ops):
            raise ConversionError(f"unsupported op at {_where(node)}. The converter must know every op so that it "
                                  f"never builds a silently wrong network. Supported:\n  {supported_ops_text()}")

    recorder = _Recorder(gm)
    values = recorder.record(example_input, check_batch=True)
    # a second batch size, so that a constant leading dimension cannot pass for the batch
    other = 2 if example_input.shape[0] != 2 else 3
    recorder.record(example_input[:1].expand(other, *example_input.shape[1:]).clone(), check_batch=True,
                    what=f"a batch of {other} copies of one sample")
    for node in gm.graph.nodes:
        _check_dim_argument(node, values)
    out = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(values[out.args[0]], torch.Tensor):
        raise ConversionError(f"the model returns {type(values[out.args[0]]).__name__}; convert() supports a "
                              "single tensor output")
    return values


def _check_dim_argument(node: fx.Node, values) -> None:
    key = node.target if node.op in ("call_function", "call_method") else None
    if key is None or key not in DIM_CHECKED:
        return
    x = values.get(node.args[0]) if node.args else None
    if not isinstance(x, torch.Tensor):
        return
    pos = DIM_CHECKED[key] + 1
    dim = node.kwargs.get("dim", node.args[pos] if len(node.args) > pos else None)
    if dim is None or (isinstance(dim, int) and dim % x.dim() == 0):
        raise ConversionError(f"{_where(node)} acts along dim={dim}, which is (or may be) the batch dimension; "
                              "pass a dim >= 1")


def _depends_on_input(gm: fx.GraphModule) -> set[fx.Node]:
    seen: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a in seen for a in node.all_input_nodes):
            seen.add(node)
    return seen


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


# ---------------------------------------------------------------------------------------------------------
# linear layers: their parameters, and BatchNorm folding


@dataclass
class _LinearSpec:
    name: str
    kind: str
    input: fx.Node
    weight: torch.Tensor
    bias: torch.Tensor | None
    conv_args: dict
    pre_pad: dict | None = None  # F.pad kwargs for a conv with padding_mode other than 'zeros'


def _get_attr(gm: fx.GraphModule, node, what: str, where: fx.Node) -> torch.Tensor | None:
    if node is None:
        return None
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        raise ConversionError(f"{_where(where)}: its {what} is computed at run time"
                              f"{f' (node {node.name!r})' if isinstance(node, fx.Node) else ''}; only linear ops "
                              "whose weight and bias are fixed parameters can be converted")
    obj = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj


_FUNCTION_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")  # F.linear: the first 3


def _linear_spec(gm: fx.GraphModule, node: fx.Node, modules, kind: str) -> _LinearSpec:
    if node.op == "call_module":
        mod = modules[node.target]
        conv_args, pre_pad = {}, None
        if kind != "linear":
            conv_args = dict(stride=mod.stride, padding=mod.padding, dilation=mod.dilation, groups=mod.groups)
            if mod.padding_mode != "zeros":
                pre_pad = dict(pad=mod._reversed_padding_repeated_twice, mode=mod.padding_mode)
                conv_args["padding"] = 0
        return _LinearSpec(node.target, kind, node.args[0], mod.weight, mod.bias, conv_args, pre_pad)

    names = _FUNCTION_ARGS[:3] if kind == "linear" else _FUNCTION_ARGS
    if len(node.args) > len(names) or set(node.kwargs) - set(names):
        raise ConversionError(f"{_where(node)}: unexpected arguments {node.args}, {node.kwargs}")
    kwargs = {**dict(zip(names, node.args)), **node.kwargs}
    x, weight_node, bias_node = kwargs.pop("input"), kwargs.pop("weight"), kwargs.pop("bias", None)
    for key, value in kwargs.items():
        if isinstance(value, fx.Node):
            raise ConversionError(f"{_where(node)}: argument {key} is computed at run time; it must be a constant")
    weight = _get_attr(gm, weight_node, "weight", node)
    bias = _get_attr(gm, bias_node, "bias", node)
    target = weight_node.target
    name = target[: -len(".weight")] if target.endswith(".weight") else node.name
    return _LinearSpec(name, kind, x, weight, bias, kwargs)


def _fold_batchnorm(gm: fx.GraphModule, modules, values) -> None:
    """Fold each eval-mode BatchNorm whose only input is a linear op (used nowhere else) into that op.

    The folded weights are stored on the linear node (``node.meta['sd_spec']``) and the BatchNorm node is
    removed; every linear node gets a spec, folded or not.
    """
    for node in list(gm.graph.nodes):
        kind = _linear_kind(node, modules)
        if kind is None:
            continue
        spec = _linear_spec(gm, node, modules, kind)
        node.meta["sd_spec"] = spec
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module":
            continue
        bn = modules[users[0].target]
        out = values[node]
        channel_dim_ok = kind != "linear" or out.dim() == 2  # BatchNorm normalises dim 1
        if not isinstance(bn, BATCHNORM_MODULES) or not bn.track_running_stats or not channel_dim_ok:
            continue
        with torch.no_grad():
            inv_std = torch.rsqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(inv_std)
            beta = bn.bias if bn.affine else torch.zeros_like(inv_std)
            factor = gamma * inv_std  # (C_out,)
            weight = spec.weight * factor.reshape(-1, *([1] * (spec.weight.dim() - 1)))
            bias = spec.bias if spec.bias is not None else torch.zeros_like(factor)
            spec.weight, spec.bias = weight, (bias - bn.running_mean) * factor + beta
        users[0].replace_all_uses_with(node)
        gm.graph.erase_node(users[0])
        values[node] = values.pop(users[0])


# ---------------------------------------------------------------------------------------------------------
# insertion


def _safe(name: str, taken: set[str]) -> str:
    base = name.replace(".", "_") or "layer"
    safe, i = base, 1
    while safe in taken:
        safe, i = f"{base}_{i}", i + 1
    taken.add(safe)
    return safe


def _insert_sigma_delta(gm: fx.GraphModule, modules, values, per_channel: bool):
    layers: dict[str, SigmaDeltaLinear] = {}
    quantizers: dict[str, Quantizer] = {}
    layer_inputs: dict[str, str] = {}
    quantizer_of: dict[fx.Node, fx.Node] = {}  # value node -> its quantizer node (shared by all consumers)
    replaced: dict[fx.Node, fx.Node] = {}  # original linear node -> its SigmaDeltaLinear node (linear feeds linear)
    taken_layers: set[str] = set()
    taken_quantizers: set[str] = set()
    graph = gm.graph

    for node in list(graph.nodes):
        spec: _LinearSpec | None = node.meta.get("sd_spec")
        if spec is None:
            continue
        if spec.name in layers:
            raise ConversionError(f"{_where(node)}: the weight of layer '{spec.name}' is used by more than one "
                                  "linear op; weight sharing is not supported")
        source = replaced.get(spec.input, spec.input)
        if spec.pre_pad is not None:  # conv with reflect/replicate/circular padding: pad first, then quantize
            with graph.inserting_before(node):
                source = graph.call_function(torch.nn.functional.pad, (source,), spec.pre_pad)
        if source not in quantizer_of:
            x = values[spec.input]
            channels = x.shape[1] if spec.kind != "linear" else x.shape[-1]
            shape = () if not per_channel else ((channels,) + (1,) * (x.dim() - 2) if spec.kind != "linear"
                                                else (channels,))
            q_target = f"{QUANTIZER_ROOT}.{_safe(spec.name, taken_quantizers)}"
            quantizer = Quantizer(spec.name, shape).to(x.dtype)
            gm.add_submodule(q_target, quantizer)
            quantizers[spec.name] = quantizer
            with graph.inserting_after(source):
                quantizer_of[source] = graph.call_module(q_target, (source,))
        q_node = quantizer_of[source]
        layer = SigmaDeltaLinear(spec.name, spec.kind, spec.weight, spec.bias, spec.conv_args)
        l_target = f"{LAYER_ROOT}.{_safe(spec.name, taken_layers)}"
        gm.add_submodule(l_target, layer)
        layers[spec.name] = layer
        layer_inputs[spec.name] = gm.get_submodule(q_node.target).name
        with graph.inserting_after(node):
            new = graph.call_module(l_target, (q_node,))
        new.meta = {k: v for k, v in node.meta.items() if k != "sd_spec"}
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        replaced[node] = new
    return layers, quantizers, layer_inputs
