"""Exceptions raised by sigmadelta. Every message names what is wrong and where."""

from __future__ import annotations

__all__ = ["SigmaDeltaError", "ConversionError", "StreamError", "MissingDependencyError", "UnknownNameError",
           "VideoError", "VideoWarning", "WeightsError"]


class SigmaDeltaError(Exception):
    """Base class of the package's errors."""


class ConversionError(SigmaDeltaError):
    """A model cannot be converted: an op the converter cannot place, an untraceable model, bad example input."""


class StreamError(SigmaDeltaError, ValueError):
    """A frame or clip that the network cannot take: wrong shape or dtype, NaN/inf, a stream that changed shape.

    Raised before any state is touched, so the network can keep going with correct input.
    """


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
