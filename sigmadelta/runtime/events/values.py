"""Values of the event engine: persistent channels-last buffers with the rows each frame touched, and the views
through which steps read them.

A :class:`Storage` is one buffer ``[R, C]`` (numpy, the model's dtype; row ``b·P + p`` is pixel ``p`` of
stream ``b``, a flat ``[B, F]`` value is one row per stream) with the list of rows written this frame (or
*all* of them). A :class:`Source` is how a graph node's value is read from a storage: channels ``c0:c0+C`` of it
through an activation applied on the fly (``act``, ``lo``, ``hi``; see
:func:`~sigmadelta.runtime.events._kquant.activate`). So a ReLU after a convolution is never stored when only
quantizers, pooling and averages read it, and the convolutions of a concatenation write into channel slices of
one storage (no copy).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._kconv import clear_marks
from ._kquant import CLAMP, HARDSIGMOID, HARDSWISH

__all__ = ["Storage", "Source", "identity_bounds", "logical_view", "TORCH_DTYPES"]

TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def logical_view(rows: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Rows ``[R, C]`` (``R = B·prod(S)``, possibly a channel slice) as the logical ``[B, C, *S]`` (a
    channels-last view), ``[B, C]`` or ``[B]``."""
    if len(shape) >= 3:
        return rows.view(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
    return rows if len(shape) == 2 else rows[:, 0]


class Storage:
    """A persistent ``[R, C]`` buffer and the rows written this frame.

    Attributes:
        rows: the buffer (numpy; :attr:`tensor` shares its memory).
        touched, n: this frame's written rows ``touched[:n]``, each once (``mark`` flags them while a kernel
            collects them); ignored when :attr:`all` is set.
        all: every row may have changed this frame (a dense step wrote the whole buffer).
    """

    __slots__ = ("name", "rows", "tensor", "touched", "mark", "all_rows", "n", "all")

    def __init__(self, name: str, rows: int, channels: int, dtype: np.dtype):
        self.name = name
        self.rows = np.zeros((rows, channels), dtype)
        self.tensor = torch.from_numpy(self.rows)
        self.touched = np.zeros(rows + 1, np.int32)  # one spare slot: kernels write before they know it is new
        self.mark = np.zeros(rows + 1, np.uint8)
        self.all_rows = np.arange(rows, dtype=np.int32)
        self.n = 0
        self.all = False

    def adopt(self, rows: torch.Tensor) -> None:
        """Take ``rows`` ``[R, C]`` (a fresh result, e.g. a dense convolution's channels-last output) as the
        buffer, without copying it."""
        self.tensor, self.rows = rows, rows.numpy()

    def clear(self) -> None:
        """A new frame: nothing written yet (the marks some kernels leave are cleared)."""
        if self.n:
            clear_marks(self.mark, self.touched, self.n)
        self.n, self.all = 0, False

    def visit(self) -> tuple[np.ndarray, int]:
        """``(rows, n)``: the rows written this frame, ``rows[:n]``."""
        return (self.all_rows, len(self.all_rows)) if self.all else (self.touched, self.n)

    @property
    def changed(self) -> bool:
        return self.all or self.n > 0

    def nbytes(self) -> int:
        return self.rows.nbytes + self.touched.nbytes + self.mark.nbytes + self.all_rows.nbytes


def identity_bounds(channels: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of a clamp that changes nothing: ``(−∞, +∞)`` per channel."""
    return np.full(channels, -np.inf, dtype), np.full(channels, np.inf, dtype)


class Source:
    """A node's value as stored: channels ``c0:c0+C`` of ``storage`` through ``act`` (with ``lo``/``hi``).

    ``shape`` is the logical shape ``[B, C, *S]`` (or ``[B, C]``, ``[B]``) of the value in the graph.
    """

    __slots__ = ("storage", "c0", "channels", "shape", "act", "lo", "hi", "is_identity", "_view")

    def __init__(self, storage: Storage, c0: int, shape: tuple[int, ...], act: int = CLAMP,
                 lo: np.ndarray | None = None, hi: np.ndarray | None = None):
        self.storage, self.c0, self.shape = storage, c0, tuple(shape)
        self.channels = shape[1] if len(shape) >= 2 else 1
        self.act = act
        if lo is None:
            lo, hi = identity_bounds(self.channels, storage.rows.dtype)
        self.lo, self.hi = lo, hi
        self.is_identity = act == CLAMP and bool(np.all(lo == -np.inf) and np.all(hi == np.inf))
        self._view = (None, None)  # (storage tensor, its logical view): rebuilt when the storage adopts a new one

    @property
    def spatial(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def pixels(self) -> int:
        """Pixels per stream, ``prod(S)`` (1 for a flat value)."""
        return math.prod(self.shape[2:])

    def with_act(self, act: int, lo: np.ndarray, hi: np.ndarray) -> "Source":
        return Source(self.storage, self.c0, self.shape, act, lo, hi)

    def reshaped(self, shape: tuple[int, ...]) -> "Source":
        """The same rows under another logical shape (a flatten or view that keeps every row: ``prod(S) = 1``)."""
        return Source(self.storage, self.c0, shape, self.act, self.lo, self.hi)

    def stored(self) -> torch.Tensor:
        """The stored values (before ``act``) as a logical ``[B, C, *S]`` view of the storage (channels-last)."""
        tensor, view = self._view
        if tensor is not self.storage.tensor:
            tensor = self.storage.tensor
            view = logical_view(tensor[:, self.c0:self.c0 + self.channels], self.shape)
            self._view = tensor, view
        return view

    def logical(self) -> torch.Tensor:
        """The value itself, ``act`` applied (a new tensor when ``act`` changes anything): dense paths and
        op counting."""
        x = self.stored()
        if self.act == HARDSWISH:
            return F.hardswish(x)
        if self.act == HARDSIGMOID:
            return F.hardsigmoid(x)
        if self.is_identity:
            return x
        shape = (1, self.channels) + (1,) * (len(self.shape) - 2)
        lo = torch.from_numpy(self.lo).view(shape)
        hi = torch.from_numpy(self.hi).view(shape)
        return torch.minimum(torch.maximum(x, lo), hi)
