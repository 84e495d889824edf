"""Runtime values of the sparse engine: one persistent buffer per graph node with this frame's dirty rows, and the
base of the plan's steps (:mod:`sigmadelta.runtime.sparse`)."""

from __future__ import annotations

import math

import torch

__all__ = ["ALL", "Value", "set_dense", "Step", "InputStep"]

ALL = "all"  # dirty marker: every row may have changed (``None``: nothing changed; else an int64 row index)


# ---------------------------------------------------------------------------------------------------------
# values


class Value:
    """One node's value: a persistent buffer that steps update in place, and this frame's dirty rows.

    Tensors of 3 or more dimensions ``[B, C, *S]`` are stored channels-last as rows ``[B·prod(S), C]``
    (:attr:`rows`), with :attr:`buf` the logical ``[B, C, *S]`` view of the same memory; a trailing *trash
    row* can be reserved for scatters that need a place to drop out-of-range taps. Smaller tensors are
    stored as they are; their dirty set is only ``None`` or ``ALL``. Non-tensor values (sizes, tuples)
    live in :attr:`obj`.
    """

    __slots__ = ("name", "is_tensor", "shape", "storage", "buf", "rows", "obj", "dirty", "channels", "nrows")

    def __init__(self, name: str, example, trash_row: bool = False, constant: bool = False):
        self.name = name
        self.dirty = None  # steps set it every frame; constants stay clean
        self.is_tensor = isinstance(example, torch.Tensor)
        self.obj = None if self.is_tensor else example
        self.storage = self.buf = self.rows = None
        self.channels = self.nrows = 0
        if not self.is_tensor:
            return
        self.shape = tuple(example.shape)
        if constant:  # a parameter or buffer of the graph (get_attr): used as it is, never written
            self.buf = example
        elif example.dim() >= 3:
            b, c, *spatial = self.shape
            self.channels, self.nrows = c, b * math.prod(spatial)
            self.storage = torch.zeros(self.nrows + int(trash_row), c, dtype=example.dtype)
            self.rows = self.storage[: self.nrows]  # (B·prod(S), C)
            self.buf = self.rows.view(b, *spatial, c).movedim(-1, 1)  # (B, C, *S), channels-last strides
        else:
            self.storage = self.buf = example.detach().clone()

    @property
    def value(self):
        return self.buf if self.is_tensor else self.obj

    @property
    def row_layout(self) -> bool:
        return self.rows is not None

    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size() if self.storage is not None else 0

    def adopt(self, y: torch.Tensor) -> None:
        """Take a freshly computed channels-last ``y`` as the whole value without copying it (dense paths).
        The next in-place row update first copies it back into :attr:`storage` (:meth:`own`)."""
        self.buf, self.rows = y, y.movedim(1, -1).reshape(self.nrows, y.shape[1])  # a view for channels-last y
        self.dirty = ALL

    def own(self) -> None:
        """Make :attr:`rows` and :attr:`buf` views of :attr:`storage` again before updating rows in place."""
        if self.rows.data_ptr() != self.storage.data_ptr():
            self.storage[: self.nrows].copy_(self.rows)
            self.rows = self.storage[: self.nrows]
            self.buf = self.rows.view(self.shape[0], *self.shape[2:], self.channels).movedim(-1, 1)


def set_dense(out: Value, result) -> None:
    """Store a whole new value (the dense paths)."""
    if out.is_tensor:
        out.buf.copy_(result)
    else:
        out.obj = result
    out.dirty = ALL


# ---------------------------------------------------------------------------------------------------------
# steps


class Step:
    """One node of the plan. ``run(fresh)`` updates :attr:`out` for the current frame; ``fresh`` (the first
    frame after a reset) asks for a full dense update."""

    kind = "op"
    out: Value | None = None

    def __init__(self, name: str):
        self.name = name
        self.paths = {"sparse": 0, "dense": 0, "idle": 0}  # layers: how many frames took each path
        self.active_rows = 0  # layers: active input rows summed over frames (activity = this / frames / rows)

    def run(self, fresh: bool) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def state_nbytes(self) -> int:
        return 0

    def plan_nbytes(self) -> int:
        return 0


class InputStep(Step):
    kind = "input"

    def __init__(self, name: str, out: Value):
        super().__init__(name)
        self.out = out
        self.frame: torch.Tensor | None = None

    def run(self, fresh: bool) -> None:
        self.out.buf.copy_(self.frame)
        self.out.dirty = ALL

