"""The event engine's steps for the ops between linear layers, each on the rows its inputs touched:

- :class:`InputStep`: the frame, copied into rows when something other than the first quantizer reads it;
- :class:`ApplyStep`: an activation stored for readers that cannot apply it on the fly, ``y[D] = act(x[D])``;
- :class:`AddStep`: a residual add, ``y[D] = a[D] + b[D]`` with ``D = D_a ∪ D_b``;
- :class:`PadStep`: constant padding, ``y[map(D)] = x[D]`` (the border is filled at reset and never changes);
- :class:`PoolStep`: max-pooling, ``y[o] = max_{q ∈ win(o)} x[q]`` for the windows ``o`` that read a row of ``D``;
- :class:`MeanStep`: the mean over all pixels of a stream, ``Σ_b += x[i] − x_{last}[i]`` for ``i ∈ D``;
- :class:`CatStep`: a concatenation along channels not built in place, each input copied into its slice;
- :class:`DenseOpStep`: any other op, recomputed by torch over the whole value when an input changed (always
  correct; its output is then touched everywhere).

``D`` is the set of rows of the input's storage written this frame (:meth:`Storage.visit`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from ._kconv import clear_marks
from ._kops import add_rows, apply_rows, collect_rows, maxpool_rows, mean_rows, pad_rows
from .values import Source, Storage

__all__ = ["InputStep", "ApplyStep", "AddStep", "PadStep", "PoolStep", "MeanStep", "CatStep", "DenseOpStep",
           "storage_for"]


class InputStep:
    """Copies the frame ``[B, ...]`` into its storage's rows (every row touched)."""

    kind = "input"

    def __init__(self, name: str, out: Source):
        self.name, self.out = name, out
        self.frame: torch.Tensor | None = None

    def run(self, fresh: bool) -> None:
        self.out.stored().copy_(self.frame)
        self.out.storage.all = True


class ApplyStep:
    """``y = act(x)`` stored, on the touched rows."""

    kind = "op"

    def __init__(self, name: str, x: Source, out: Source):
        self.name, self.x, self.out = name, x, out

    def run(self, fresh: bool) -> None:
        x, st = self.x, self.out.storage
        rows, n = x.storage.visit()
        if n:
            apply_rows(rows, n, x.storage.rows, x.c0, x.act, x.lo, x.hi, st.rows, self.out.c0)
        st.all = x.storage.all
        if not st.all:
            st.touched[:n] = rows[:n]
            st.n = n


class AddStep:
    """``y = a + b`` (same shapes, both read without activation), on the union of their touched rows."""

    kind = "op"

    def __init__(self, name: str, a: Source, b: Source, out: Source):
        self.name, self.a, self.b, self.out = name, a, b, out

    def run(self, fresh: bool) -> None:
        sa, sb, st = self.a.storage, self.b.storage, self.out.storage
        if not (sa.changed or sb.changed):
            return
        if sa.all or sb.all:
            rows, n = st.all_rows, len(st.all_rows)
            add_rows(rows, n, rows, 0, sa.rows, self.a.c0, sb.rows, self.b.c0, st.rows, st.mark, st.touched)
            st.all = True
        else:
            st.n = add_rows(sa.touched, sa.n, sb.touched, sb.n, sa.rows, self.a.c0, sb.rows, self.b.c0, st.rows,
                               st.mark, st.touched)


class PadStep:
    """Constant padding of the spatial dimensions; ``target[p]``: where pixel ``p`` lands in the padded value."""

    kind = "op"

    def __init__(self, name: str, x: Source, out: Source, target: np.ndarray, value: float):
        self.name, self.x, self.out, self.target, self.value = name, x, out, target, value
        self.reset()

    def reset(self) -> None:
        self.out.storage.rows.fill(self.value)

    def run(self, fresh: bool) -> None:
        x, st = self.x, self.out.storage
        rows, n = x.storage.visit()
        if n:
            st.n = pad_rows(rows, n, x.storage.rows, x.c0, x.act, x.lo, x.hi, x.pixels, self.out.pixels,
                               self.target, st.rows, st.touched)


class PoolStep:
    """Max-pooling (its input read through a nondecreasing activation, applied after the maximum)."""

    kind = "op"

    def __init__(self, name: str, x: Source, out: Source, windows: tuple, reach: tuple):
        self.name, self.x, self.out = name, x, out
        self.nwin, self.win = windows
        self.nrev, self.rev = reach

    def run(self, fresh: bool) -> None:
        x, st = self.x, self.out.storage
        rows, n = x.storage.visit()
        if n:
            st.n = maxpool_rows(rows, n, x.storage.rows, x.c0, x.act, x.lo, x.hi, x.pixels, self.out.pixels,
                                   self.nrev, self.rev, self.nwin, self.win, st.rows, st.mark, st.touched)
            st.all = x.storage.all

    def plan_nbytes(self) -> int:
        return self.nwin.nbytes + self.win.nbytes + self.nrev.nbytes + self.rev.nbytes


class MeanStep:
    """The mean over every pixel of each stream (global average pooling), kept as float64 running sums."""

    kind = "op"

    def __init__(self, name: str, x: Source, out: Source):
        self.name, self.x, self.out = name, x, out
        b, c = x.shape[:2]
        self.last = np.zeros(x.storage.rows.shape[:1] + (c,), x.storage.rows.dtype)  # act(x) as last summed
        self.sums = np.zeros((b, c), np.float64)
        self.tmp = np.zeros(c, x.storage.rows.dtype)

    def run(self, fresh: bool) -> None:
        x, st = self.x, self.out.storage
        rows, n = x.storage.visit()
        if n:
            st.n = mean_rows(rows, n, x.storage.rows, x.c0, x.act, x.lo, x.hi, x.pixels, x.storage.all,
                                self.last, self.sums, st.rows, self.tmp, st.touched)

    def state_nbytes(self) -> int:
        return self.last.nbytes + self.sums.nbytes


class CatStep:
    """A concatenation along channels that the plan could not build in place: each input copied (through its
    activation) into its channel slice, on its touched rows; touched: their union."""

    kind = "op"

    def __init__(self, name: str, inputs: list[Source], out: Source):
        self.name, self.inputs, self.out = name, inputs, out
        self.offsets = np.cumsum([0] + [x.channels for x in inputs[:-1]]).tolist()

    def run(self, fresh: bool) -> None:
        st = self.out.storage
        for x, c0 in zip(self.inputs, self.offsets):
            rows, n = x.storage.visit()
            if n:
                apply_rows(rows, n, x.storage.rows, x.c0, x.act, x.lo, x.hi, st.rows, c0)
                st.all |= x.storage.all
                if not st.all:
                    st.n = collect_rows(rows, n, st.mark, st.touched, st.n)
        if st.n:
            clear_marks(st.mark, st.touched, st.n)


class DenseOpStep:
    """Any other per-sample op: ``y = f(inputs)`` by torch whenever one of its inputs changed."""

    kind = "dense-op"

    def __init__(self, name: str, node: fx.Node, fn, inputs: list[Source], resolve, out: Source):
        self.name, self.node, self.fn, self.inputs, self.resolve, self.out = name, node, fn, inputs, resolve, out

    def run(self, fresh: bool) -> None:
        if not (fresh or any(v.storage.changed for v in self.inputs)):
            return
        y = self.fn(*fx.node.map_arg(self.node.args, self.resolve), **fx.node.map_arg(self.node.kwargs, self.resolve))
        try:
            self.out.stored().copy_(y)
        except RuntimeError as e:
            raise RuntimeError(f"event engine: node {self.node.name!r} ({self.node.target}) gave shape "
                               f"{tuple(y.shape)}, planned {self.out.shape}: {e}") from None
        self.out.storage.all = True


def storage_for(name: str, shape: tuple[int, ...], dtype: np.dtype) -> Storage:
    """A new storage for a value of logical shape ``[B, C, *S]`` (``[B, C]``; ``[B]``)."""
    channels = shape[1] if len(shape) >= 2 else 1
    rows = int(np.prod(shape)) // channels
    return Storage(name, rows, channels, dtype)
