"""VGG-19, the network of the paper's video experiment, in torchvision's exact layout.

The module names and indices match torchvision's ``vgg19`` (``features.0`` ... ``features.34``, ``avgpool``,
``classifier.0/3/6``), so the standard ImageNet state_dict ``vgg19-dcbb9e9d.pth`` loads as is. No package
ships those weights, so :func:`~sigmadelta.models.get` needs ``weights=PATH``, or ``pretrained=False`` for
random weights (torchvision's initialisation, seeded).
"""

from __future__ import annotations

import torch
from torch import nn

from ._bundle import ModelBundle, ModelSpec, register
from ._bundle import load_weights
from .imagenet import ImagePreprocess, imagenet_classes

__all__ = ["VGG", "vgg19", "VGG19_LAYERS"]

# configuration "E" of Simonyan & Zisserman: conv widths, "M" = 2x2 max-pool
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M")


class VGG(nn.Module):
    """VGG: ``features`` (3x3 convs + ReLU, max-pools), ``avgpool`` to 7x7, ``classifier`` (three linear layers).

    ReLUs are not in-place (torchvision's are; the state_dict is the same), so that no op overwrites a value
    that a converted network keeps as state.
    """

    def __init__(self, layers=VGG19_LAYERS, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        features: list[nn.Module] = []
        channels = 3
        for v in layers:
            if v == "M":
                features.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                features += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
                channels = v
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """torchvision's initialisation: He-normal convolutions, N(0, 0.01) linear layers, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, H/32, W/32)
        x = self.avgpool(x)  # (N, 512, 7, 7)
        x = torch.flatten(x, 1)  # (N, 25088)
        return self.classifier(x)  # (N, num_classes) logits


def vgg19(seed: int = 0) -> VGG:
    """VGG-19 with random (seeded) weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VGG()


def _build(weights=None, pretrained=True, progress=True) -> ModelBundle:
    if weights is None and pretrained:
        raise FileNotFoundError(
            "VGG-19's ImageNet weights ship with no package, so they cannot be loaded offline by name: pass the "
            "torchvision state_dict file, get('vgg19', weights='path/to/vgg19-dcbb9e9d.pth'), or ask for "
            "random weights with get('vgg19', pretrained=False)")
    model = vgg19()
    if weights is not None:
        load_weights(model, weights, "vgg19 (torchvision layout)")
    source = f"file {weights}" if weights is not None else "random"
    return ModelBundle("vgg19", model.eval(), ImagePreprocess(resize=256, crop=224), imagenet_classes(),
                       (3, 224, 224), source)


register(ModelSpec("vgg19", _build, "VGG-19 (torchvision layout), ImageNet, 224x224 input; the paper's video network",
                   "a torchvision state_dict file the user names: get('vgg19', weights=PATH)", lambda: False))
