"""Which graph nodes the converter knows, by kind.

- *Linear* ops get a quantizer on their input and become :class:`~sigmadelta.core.modules.SigmaDeltaLinear`.
- *Per-sample* ops run unchanged on real, integrated values between linear ops. Such an op may be
  nonlinear (ReLU, max-pooling, softmax, a product of two tensors): it is correct in every mode as long as
  it treats each sample of the batch on its own and holds no hidden linear layer. The converter checks the
  first by running the model at two batch sizes; the second is why the list is closed: a module that hides
  a ``nn.Linear`` (``nn.MultiheadAttention``, ``nn.LSTM``, ...) would otherwise run unquantized and
  uncounted, a silently wrong network.

Users add their own per-sample ops with ``convert(..., extra_ops=[...])``.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LINEAR_MODULES", "LINEAR_FUNCTIONS", "BATCHNORM_MODULES", "is_per_sample", "supported_ops_text"]

# ---------------------------------------------------------------------------------------------------------
# linear operations: (module class or function) -> kind understood by SigmaDeltaLinear

LINEAR_MODULES: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv1d",
    nn.Conv2d: "conv2d",
    nn.Conv3d: "conv3d",
}
LINEAR_FUNCTIONS = {F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d"}

BATCHNORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

# ---------------------------------------------------------------------------------------------------------
# per-sample ops

# The one op registry: the converter accepts these between linear ops (per-sample ops), and the sparse engine
# (sigmadelta.runtime.ops) runs the elementwise, binary and constant-padding ones row by row.

# elementwise nonlinearities (each unit on its own)
ELEMENTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
    nn.Tanh, nn.Hardtanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.Identity,
)
DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)  # the identity in eval
CONSTANT_PAD_MODULES = (nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.ConstantPad1d, nn.ConstantPad2d,
                        nn.ConstantPad3d)
ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.elu,
    F.selu, F.celu, F.softplus, F.sigmoid, F.tanh, torch.relu, torch.sigmoid, torch.tanh, torch.abs, torch.exp,
    torch.neg, torch.clamp, torch.clip, operator.neg,
}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "abs", "exp", "neg", "clamp", "clamp_min", "clamp_max",
                       "contiguous"}
# elementwise ops of two values (residual adds)
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                    torch.div, torch.maximum, torch.minimum}
BINARY_METHODS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}

PER_SAMPLE_MODULES: tuple[type[nn.Module], ...] = ELEMENTWISE_MODULES + DROPOUT_MODULES + CONSTANT_PAD_MODULES + (
    nn.PReLU,
    # pooling
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    # shape and other padding
    nn.Flatten, nn.Unflatten, nn.ReflectionPad1d, nn.ReflectionPad2d, nn.ReplicationPad1d, nn.ReplicationPad2d,
    nn.Upsample,
    # normalization in eval mode (a BatchNorm right after a linear op is folded into it instead)
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
    # output
    nn.Softmax, nn.LogSoftmax,
)

PER_SAMPLE_FUNCTIONS = ELEMENTWISE_FUNCTIONS | BINARY_FUNCTIONS | {
    operator.getitem, torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
    torch.cat, torch.concat, torch.stack, torch.chunk, torch.split, torch.mean, torch.sum, torch.amax,
    torch.softmax, torch.log_softmax,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.pad, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.interpolate,
    F.batch_norm, F.layer_norm, F.group_norm, F.softmax, F.log_softmax,
    getattr,
}

PER_SAMPLE_METHODS = {
    "add", "sub", "mul", "div", "neg", "abs", "exp", "relu", "sigmoid", "tanh", "clamp", "clamp_min", "clamp_max",
    "view", "view_as", "reshape", "reshape_as", "flatten", "permute", "transpose", "squeeze", "unsqueeze",
    "contiguous", "size", "dim", "mean", "sum", "amax", "softmax", "log_softmax", "chunk", "split", "expand_as",
}

# ops that normalise or index along a `dim` argument without changing the batch size, so the batch-size check
# cannot see a dim of 0: (position of `dim` among the positional args after the input, default if absent)
DIM_CHECKED = {F.softmax: 0, F.log_softmax: 0, torch.softmax: 0, torch.log_softmax: 0,
               "softmax": 0, "log_softmax": 0, "squeeze": 0, torch.squeeze: 0}


def is_per_sample(op, extra_ops=()) -> bool:
    """Whether ``op`` (a module instance, a function or a method name) is a known per-sample op."""
    if isinstance(op, nn.Module):
        extra = tuple(t for t in extra_ops if isinstance(t, type))
        return isinstance(op, PER_SAMPLE_MODULES + extra)
    if isinstance(op, str):
        return op in PER_SAMPLE_METHODS or op in extra_ops
    return op in PER_SAMPLE_FUNCTIONS or op in extra_ops


def supported_ops_text() -> str:
    linear = ", ".join(["nn.Linear", "nn.Conv1d/2d/3d (and subclasses)", "F.linear", "F.conv1d/2d/3d"])
    modules = ", ".join(sorted({f"nn.{m.__name__}" for m in PER_SAMPLE_MODULES}))
    functions = ", ".join(sorted({op_name(f) for f in PER_SAMPLE_FUNCTIONS}))
    methods = ", ".join(sorted(f"Tensor.{m}" for m in PER_SAMPLE_METHODS))
    return (f"linear ops (quantized): {linear}.\n  per-sample modules: {modules}.\n  functions: {functions}.\n"
            f"  methods: {methods}.\n  More per-sample ops can be allowed with convert(..., extra_ops=[...]).")


def op_name(op) -> str:
    if isinstance(op, str):
        return f"Tensor.{op}"
    module = getattr(op, "__module__", None) or ""
    name = getattr(op, "__name__", repr(op))
    if module.startswith("torch.nn.functional") or op in LINEAR_FUNCTIONS:
        return f"F.{name}"
    if module == "_operator":
        return f"operator.{name}"
    if module.startswith("torch"):
        return f"torch.{name}"
    return f"{module}.{name}" if module else name
