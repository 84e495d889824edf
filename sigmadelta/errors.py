"""Exceptions raised by sigmadelta. Every message names what is wrong and where.

Every error of the user's making (a bad argument, setting or file) is a :class:`SigmaDeltaError`; the command line
answers those with one line and exit code 2, and anything else as an internal error.
"""

from __future__ import annotations

__all__ = ["SigmaDeltaError", "ConversionError", "StreamError", "ConfigError", "UsageError", "MissingFileError",
           "ScalesError", "CheckpointError", "FinetuneError", "MissingDependencyError", "UnknownNameError",
           "VideoError", "VideoWarning", "WeightsError", "ClipNotFetchedError", "ClipFetchError"]


class SigmaDeltaError(Exception):
    """Base class of the package's errors."""


class ConversionError(SigmaDeltaError):
    """A model cannot be converted: an op the converter cannot place, an untraceable model, bad example input."""


class StreamError(SigmaDeltaError, ValueError):
    """A frame or clip that the network cannot take: wrong shape or dtype, NaN/inf, a stream that changed shape.

    Raised before any state is touched, so the network can keep going with correct input.
    """


class ConfigError(SigmaDeltaError, ValueError):
    """A setting that cannot be used (:mod:`sigmadelta.config`); the message names the field and the value."""


class UsageError(SigmaDeltaError, ValueError):
    """Arguments that do not go together, or a value a command cannot use; the message names the argument."""


class MissingFileError(SigmaDeltaError, FileNotFoundError):
    """A file the user named does not exist (or is a folder where a file is wanted)."""


class ScalesError(SigmaDeltaError, ValueError):
    """A scales file that cannot be used: unreadable, of another format, for another model or other layers."""


class CheckpointError(SigmaDeltaError, ValueError):
    """A checkpoint file that cannot be used: unreadable, of another format, for another model or network."""


class FinetuneError(SigmaDeltaError, ValueError):
    """Fine-tuning data that cannot be used (clips of the wrong shape or too short), or a run to resume that is
    another run."""


class MissingDependencyError(SigmaDeltaError, ImportError):
    """An optional package that a dataset, clip or model needs is not installed. The message says what to install."""


class UnknownNameError(SigmaDeltaError, KeyError):
    """An unknown dataset, clip or model name. The message lists the known ones."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class VideoError(SigmaDeltaError):
    """A video file that cannot be decoded: empty, corrupt or truncated. The message names the file and frame."""


class VideoWarning(UserWarning):
    """A video file read with ``strict=False`` that ended early or held corrupt packets: its decodable frames were
    used. The message names the file and the frame where it ended."""


class WeightsError(SigmaDeltaError, ValueError):
    """A weights file that does not fit the model: unreadable, or with missing, unexpected or mis-shaped keys."""


class ClipNotFetchedError(SigmaDeltaError, FileNotFoundError):
    """A test clip that :func:`sigmadelta.data.fetch_clips` has not fetched yet. The message says how to fetch it."""

    def __str__(self) -> str:  # OSError would prefix an errno
        return str(self.args[0]) if self.args else ""


class ClipFetchError(SigmaDeltaError):
    """Fetching a clip failed: pip could not download its wheel (no network, a hash mismatch), or the wheel's file
    is not the pinned one. The message names the clip, the wheel and what went wrong; nothing was written."""
