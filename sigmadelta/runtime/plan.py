"""The sparse engine's plan: one step per node of the converted graph, built once per batch size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from ..core.modules import Quantizer, SigmaDeltaLinear
from .layers import ConvStep, LinearStep
from .ops import PadStep, RowwiseStep, not_inplace, plan_op
from .quantize import QuantizeStep
from .values import InputStep, Step, Value

__all__ = ["Plan", "build_plan", "example_values"]


@dataclass
class Plan:
    """The steps of one frame, in graph order, with the quantizer steps, the input step and the output value."""

    steps: list[Step]
    quantizers: list[QuantizeStep]
    input: InputStep
    output: Value


def build_plan(gm: fx.GraphModule, net, batch: int) -> Plan:
    """Walk ``net``'s graph ``gm`` once and build one step per node (the plan) for ``batch`` streams."""
    modules = dict(gm.named_modules())
    example = torch.zeros((batch, *net.sample_shape), dtype=net.dtype)
    examples = example_values(gm, modules, example)
    consumers = {node: list(node.users) for node in gm.graph.nodes}

    values: dict[fx.Node, Value] = {}
    quantize: dict[fx.Node, QuantizeStep] = {}
    step_of: dict[fx.Node, Step] = {}
    steps: list[Step] = []
    quantizers: list[QuantizeStep] = []
    for node in gm.graph.nodes:
        mod = modules.get(node.target) if node.op == "call_module" else None
        if node.op == "output":
            output = values[node.args[0]]
            continue
        if isinstance(mod, Quantizer):
            step = QuantizeStep(node.name, mod, values[node.args[0]])
            quantize[node] = step
            quantizers.append(step)
            steps.append(step)
            continue
        trash = isinstance(mod, SigmaDeltaLinear) and mod.kind != "linear"
        out = values[node] = Value(node.name, examples[node], trash_row=trash, constant=node.op == "get_attr")
        if node.op == "placeholder":
            step = input_step = InputStep(node.name, out)
        elif node.op == "get_attr":
            continue  # a constant: its value never changes
        elif isinstance(mod, SigmaDeltaLinear):
            q = quantize[node.args[0]]
            step = (LinearStep if mod.kind == "linear" else ConvStep)(mod.name, mod, q, out)
        else:
            step = plan_op(node, mod, values, out, consumers)
        steps.append(step)
        step_of[node] = step
    for node, step in step_of.items():  # fuse activation -> constant pad on the dense path
        if isinstance(step, PadStep):
            producer = step_of.get(node.args[0])
            if isinstance(producer, RowwiseStep) and producer.out_fn is not None and len(consumers[node.args[0]]) == 1:
                producer.dense_into, step.fused = step.out.buf[step.interior], True
    return Plan(steps, quantizers, input_step, output)


def example_values(gm: fx.GraphModule, modules: dict, example: torch.Tensor) -> dict:
    """Every node's value on ``example`` with the quantizers as identities and the layers as plain linear
    ops (no state is touched): it fixes buffer shapes and types."""
    env: dict[fx.Node, object] = {}
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
        # output: nothing to compute
    return env
