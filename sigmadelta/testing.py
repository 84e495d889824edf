"""Small models and synthetic streams for tests, examples and the demo, and the margin that makes comparing two
computations' levels exactly an honest test.

The three toy families cover what the converter must handle: an MLP, a VGG-style CNN (conv, ReLU,
max-pooling, flatten, fully connected) and a residual CNN (depthwise convs, BatchNorm to fold, ReLU6,
zero padding, residual adds, spatial mean).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["mlp", "vgg_style_cnn", "residual_cnn", "correlated_stream", "randomize_batchnorm", "decision_margin"]


def mlp(sizes=(784, 200, 200, 10), bias: bool = True) -> nn.Sequential:
    """Fully connected ReLU network, e.g. the paper's 784-200-200-10 (logits out)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out, bias=bias))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def vgg_style_cnn(in_channels: int = 3, widths=(8, 16), size: int = 16, n_classes: int = 10) -> nn.Sequential:
    """Two conv-conv-maxpool stages, then two fully connected layers (a tiny VGG)."""
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        c = w
        size //= 2
    layers += [nn.Flatten(), nn.Linear(c * size * size, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, n_classes)]
    return nn.Sequential(*layers).eval()


class _InvertedResidual(nn.Module):
    """MobileNet-style block: 1x1 expand, padded depthwise 3x3, 1x1 project (linear bottleneck), residual add."""

    def __init__(self, channels: int, expand: int, stride: int):
        super().__init__()
        hidden = channels * expand
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.pad = nn.ZeroPad2d((0, 1, 0, 1) if stride == 2 else (1, 1, 1, 1))  # TF-style 'same' padding
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride=stride, groups=hidden, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(channels)
        self.residual = stride == 1

    def forward(self, x):
        y = F.relu6(self.bn(self.depthwise(self.pad(self.expand(x)))))
        y = self.project_bn(self.project(y))
        return x + y if self.residual else y


class ResidualCNN(nn.Module):
    """Stem conv, inverted-residual blocks, spatial mean, classifier."""

    def __init__(self, in_channels: int = 3, channels: int = 8, expand: int = 2, blocks: int = 2, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(channels)
        self.blocks = nn.Sequential(*[_InvertedResidual(channels, expand, 1) for _ in range(blocks)])
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x):
        x = F.relu6(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        return self.head(x.mean((2, 3)))


def residual_cnn(**kwargs) -> ResidualCNN:
    """A residual CNN with depthwise convs, BatchNorm, ReLU6 and padding, BatchNorm statistics randomised."""
    model = ResidualCNN(**kwargs)
    randomize_batchnorm(model)
    return model.eval()


def randomize_batchnorm(model: nn.Module, generator: torch.Generator | None = None) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters (folding is then tested)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5, generator=generator)
                m.running_var.uniform_(0.5, 2.0, generator=generator)
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)


def correlated_stream(steps: int, shape, *, batch: int = 1, step_std: float = 0.05, low: float = 0.0,
                      high: float = 1.0, dtype=torch.float32, generator: torch.Generator | None = None):
    """A temporally correlated clip ``[steps, batch, *shape]``: a random start plus a clipped random walk.

    Neighbouring frames differ by about ``step_std`` per unit, the way neighbouring video frames do.
    """
    shape = tuple(shape)
    start = torch.rand((1, batch, *shape), generator=generator, dtype=dtype) * (high - low) + low
    walk = torch.randn((steps, batch, *shape), generator=generator, dtype=dtype).mul_(step_std)
    walk[0] = 0
    return (start + walk.cumsum(0)).clamp_(low, high)


@torch.no_grad()
def decision_margin(net) -> float:
    """How close the last call of ``net`` came to a decision of its quantizers: the smallest distance, over every
    quantizer, unit and step, of a scaled input from a boundary where its level would turn out otherwise.

    The boundaries: the half-integers of ``k x`` (rounding, and the Rounding network's integers that op counting
    reads in every scheme); for hysteresis ``|k x_t − L_{t−1}| = ½ + h``; for thresholds ``|x_t − L_{t−1}| = θ``.
    Two computations of the same values that differ by less than this margin (another summation order on another
    CPU, a batch of other shape) give the same levels, messages and op counts: a test that compares those exactly
    asserts first that the margin exceeds the float difference it allows. Call it after a clip-mode run from zero
    state (``net.reset(); net.run(clip)``); ``inf`` in the original and temporal-difference modes.
    """
    margin = math.inf
    for name, seen in net.observations().items():
        if seen.r is None:
            continue
        q = net.quantizers[name]
        x = seen.x.double()
        v = q.scale.detach().double() * x
        margin = min(margin, float((v - v.floor() - 0.5).abs().min()))  # round(k x): the half-integers
        if seen.s is None or q.scheme == "sigma-delta":
            continue
        steps = q.steps
        u = (q.message_scale.detach().double() * x).unflatten(0, (steps, -1))  # (T, B, ...)
        levels = seen.s.double().unflatten(0, (steps, -1)).cumsum(0)  # L_t, from L_{-1} = 0 at the stream's start
        last = torch.cat([torch.zeros_like(levels[:1]), levels[:-1]])
        band = q.scheme_param + (0.5 if q.scheme == "hysteresis" else 0.0)
        margin = min(margin, float(((u - last).abs() - band).abs().min()))
    return margin
