"""Synthetic video from still photos that packages ship: camera motion without labels, for fine-tuning.

Each clip is ``T`` uint8 RGB frames ``[T, S, S, 3]`` made from one photo of scikit-image's data folder (read with
matplotlib's PNG/JPEG reader; scikit-image's code is never imported) by one motion:

==========  ==================================================================================================
motion      frame t
==========  ==================================================================================================
pan         a square window sliding across the photo at a constant speed (a panning camera)
zoom        a centred window shrinking steadily (the camera moving in), resized to ``S``
jitter      a fixed window displaced by a few pixels at random each frame (a hand-held camera)
flicker     a fixed window whose brightness varies by a few percent (lighting, auto-exposure)
object      a fixed window with a patch of *another* photo pasted on it, moving across (a static camera
            watching a moving object)
==========  ==================================================================================================

The photos are split once, by name, into ``train`` and ``validation`` (:data:`PHOTOS`), so a network fine-tuned
on one split can be evaluated on clips it has never seen. Clips are deterministic: ``seed`` and the photo's name
fix every random choice.

>>> from sigmadelta.data import synthetic
>>> clips = synthetic.motion_clips("validation", frames=4, size=64)   # doctest: +SKIP
>>> clips[0].shape, clips[0].dtype                                     # doctest: +SKIP
((4, 64, 64, 3), dtype('uint8'))
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from .._utils.packages import package_file

__all__ = ["PHOTOS", "MOTIONS", "photo", "motion_clip", "motion_clips", "training_set"]

# photo name -> split. Colour photos first; the grey ones are replicated to RGB. Fixed: never re-drawn.
PHOTOS = {
    "astronaut": "train", "coffee": "train", "chelsea": "train", "rocket": "train", "motorcycle_left": "train",
    "retina": "train", "hubble_deep_field": "train", "camera": "train", "coins": "train", "brick": "train",
    "grass": "train", "gravel": "train", "moon": "train", "page": "train",
    "motorcycle_right": "validation", "ihc": "validation", "color": "validation", "clock_motion": "validation",
    "text": "validation", "cell": "validation",
}
_FILES = {"retina": "retina.jpg", "rocket": "rocket.jpg", "hubble_deep_field": "hubble_deep_field.jpg"}
MOTIONS = ("pan", "zoom", "jitter", "flicker", "object")


def photo(name: str) -> np.ndarray:
    """A photo of scikit-image's data folder as uint8 RGB ``[H, W, 3]``."""
    import matplotlib.image

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; the photos are {sorted(PHOTOS)}")
    path = package_file("skimage", "scikit-image", f"data/{_FILES.get(name, name + '.png')}", f"the {name!r} photo")
    img = matplotlib.image.imread(path)
    if img.dtype != np.uint8:  # PNGs read as float in [0, 1]
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, 3, h, w]`` float -> ``[N, 3, size, size]``, bilinear with antialiasing."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _windows(img: torch.Tensor, boxes: list[tuple[int, int, int]], size: int) -> torch.Tensor:
    """Square crops ``(top, left, side)`` of ``img`` ``[3, H, W]``, each resized to ``size``: ``[T, 3, S, S]``."""
    return torch.cat([_resize(img[None, :, t:t + s, l:l + s], size) for t, l, s in boxes])


def motion_clip(image: np.ndarray, motion: str, frames: int = 16, size: int = 256, *, seed: int = 0,
                other: np.ndarray | None = None) -> np.ndarray:
    """One synthetic clip of ``image`` (uint8 ``[H, W, 3]``) under ``motion`` (see the module docstring).

    Args:
        image: the photo.
        motion: one of :data:`MOTIONS`.
        frames: ``T``.
        size: ``S``, the side of the square output frames.
        seed: fixes the window's position, speeds and random offsets.
        other: the photo whose patch moves across (``motion="object"``); default: ``image`` flipped.

    Returns:
        uint8 ``[T, S, S, 3]``.
    """
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    if frames < 1 or size < 8:
        raise ValueError(f"need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    g = np.random.default_rng(seed)
    img = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()  # (3, H, W)
    h, w = img.shape[1:]
    side = int(min(h, w) * g.uniform(0.55, 0.75))
    top, left = int(g.integers(0, h - side + 1)), int(g.integers(0, w - side + 1))
    if motion == "pan":  # across the free room, in a random direction, at up to ~1.5% of the window per frame
        angle = g.uniform(0, 2 * np.pi)
        speed = g.uniform(0.3, 1.0) * min(side * 0.015, max(h - side, w - side, 1) / max(frames - 1, 1))
        ts = np.clip(top + speed * np.sin(angle) * np.arange(frames), 0, h - side).round().astype(int)
        ls = np.clip(left + speed * np.cos(angle) * np.arange(frames), 0, w - side).round().astype(int)
        out = _windows(img, [(t, l, side) for t, l in zip(ts, ls)], size)
    elif motion == "zoom":  # the window shrinks to ~70% of its side over the clip, about its centre
        ct, cl = top + side / 2, left + side / 2
        sides = side * np.linspace(1.0, g.uniform(0.6, 0.8), frames)
        out = _windows(img, [(int(round(ct - s / 2)), int(round(cl - s / 2)), int(round(s))) for s in sides], size)
    elif motion == "jitter":
        top, left = max(top, 3), max(left, 3)
        top, left = min(top, h - side - 3), min(left, w - side - 3)
        offsets = g.integers(-2, 3, size=(frames, 2))
        out = _windows(img, [(top + dt, left + dl, side) for dt, dl in offsets], size)
    elif motion == "flicker":
        gain = 1 + 0.04 * np.sin(np.arange(frames) * g.uniform(0.5, 1.5)) + g.normal(0, 0.01, frames)
        out = _windows(img, [(top, left, side)], size) * torch.tensor(gain, dtype=torch.float32).view(-1, 1, 1, 1)
    else:
        out = _pasted(_windows(img, [(top, left, side)], size)[0], other, frames, size, g)
    return out.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _pasted(background: torch.Tensor, other: np.ndarray | None, frames: int, size: int, g) -> torch.Tensor:
    """A patch of ``other`` (a third of the frame) moving across ``background`` ``[3, S, S]``: ``[T, 3, S, S]``."""
    src = torch.from_numpy(np.array(other)).permute(2, 0, 1).float() if other is not None \
        else background.flip(-1)
    patch = _resize(src[None], size // 3)[0]  # (3, p, p)
    p = patch.shape[-1]
    row = int(g.integers(0, size - p + 1))
    cols = np.linspace(0, size - p, frames).round().astype(int)
    if g.random() < 0.5:
        cols = cols[::-1]
    out = background.expand(frames, *background.shape).clone()
    for t, c in enumerate(cols):
        out[t, :, row:row + p, c:c + p] = patch
    return out


def motion_clips(split: str, frames: int = 16, size: int = 256, motions=MOTIONS, *, seed: int = 0,
                 preprocess=None) -> list:
    """One clip per photo of ``split`` and motion: ``len(photos) × len(motions)`` clips, in a fixed order.

    Args:
        split: ``"train"`` or ``"validation"`` (see :data:`PHOTOS`).
        frames, size: as in :func:`motion_clip`.
        motions: which motions.
        seed: varies every clip's random choices (the photo's name is mixed in).
        preprocess: if given (a model bundle or its ``preprocess``), clips are returned as model input
            ``[T, 1, ...]`` float tensors, ready for ``SigmaDeltaNet.run`` and fine-tuning; else uint8 arrays.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'validation'")
    preprocess = getattr(preprocess, "preprocess", preprocess)
    names = [n for n, s in PHOTOS.items() if s == split]
    images = {n: photo(n) for n in names}
    clips = []
    for i, name in enumerate(names):
        for motion in motions:
            clip_seed = zlib.crc32(f"{name}/{motion}/{seed}".encode())
            other = images[names[(i + 1) % len(names)]]
            clip = motion_clip(images[name], motion, frames, size, seed=clip_seed, other=other)
            clips.append(clip if preprocess is None else preprocess(clip).unsqueeze(1))
    return clips


def training_set(preprocess, clips=("carphone", "synthetic"), *, frames: int = 16, size: int = 256,
                 max_frames: int | None = None) -> tuple[list, list[str]]:
    """Training clips for fine-tuning an image model, as model input ``[T, 1, ...]``, and their names.

    Args:
        preprocess: a model bundle or its ``preprocess``.
        clips: bundled clip names (:data:`~sigmadelta.data.CLIPS`), video files, and ``"synthetic"`` (the train
            split of :func:`motion_clips`, every motion).
        frames, size: of the synthetic clips.
        max_frames: keep only the first frames of each bundled clip or file.
    """
    from .video import load_clip

    out, names = [], []
    for clip in clips:
        if clip == "synthetic":
            made = motion_clips("train", frames, size, preprocess=preprocess)
            out += made
            names.append(f"synthetic ({len(made)} clips of {frames} frames)")
        else:
            out.append(load_clip(clip, preprocess, max_frames=max_frames))
            names.append(str(clip))
    return out, names
