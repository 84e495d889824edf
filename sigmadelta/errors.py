"""Exceptions raised by sigmadelta. Every message names what is wrong and where."""

from __future__ import annotations

__all__ = ["SigmaDeltaError", "ConversionError", "StreamError"]


class SigmaDeltaError(Exception):
    """Base class of the package's errors."""


class ConversionError(SigmaDeltaError):
    """A model cannot be converted: an op the converter cannot place, an untraceable model, bad example input."""


class StreamError(SigmaDeltaError, ValueError):
    """A frame or clip that the network cannot take: wrong shape or dtype, NaN/inf, a stream that changed shape.

    Raised before any state is touched, so the network can keep going with correct input.
    """
