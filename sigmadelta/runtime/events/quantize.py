"""The event engine's quantizer step: one layer input's delta quantizer, on the rows its source touched.

.. math:: L_t = f(k x_t, L_{t-1}), \\qquad s_t = L_t - L_{t-1}, \\qquad \\text{message } s_t / k \\text{ where } s_t \\ne 0

with ``f`` the level recurrence of the quantizer's scheme (:mod:`sigmadelta.core.functional`; the kernels in
:mod:`~sigmadelta.runtime.events._kquant`). Every scheme's ``f`` is idempotent (``f(v, f(v, L)) = f(v, L)``), so
rows whose input did not change keep their level and are not visited. The step emits the messages as a CSR list
(active rows, their nonzero channels, ``s/k``) for the layers it feeds, and keeps the levels ``L_t`` complete,
from which a layer running densely recomputes ``u = W L / k + b``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ...core.functional import HYSTERESIS, SIGMA_DELTA_SCHEME, THRESHOLD
from ...core.modules import Quantizer
from ._kquant import QUANTIZE_PLANES, QUANTIZE_ROWS, ROUND
from ._kquant import HYSTERESIS as HYSTERESIS_CODE, THRESHOLD as THRESHOLD_CODE
from .values import TORCH_DTYPES, logical_view

__all__ = ["QuantizeStep", "ImageInput"]

_SCHEMES = {SIGMA_DELTA_SCHEME: ROUND, HYSTERESIS: HYSTERESIS_CODE, THRESHOLD: THRESHOLD_CODE}


class ImageInput:
    """The network's input frame ``[B, C, *S]`` (NCHW, as given), read by the quantizer in place."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = tuple(shape)
        self.channels, self.spatial, self.pixels = shape[1], self.shape[2:], int(np.prod(shape[2:]))
        self.frame: np.ndarray | None = None  # (B, C, P), set every frame


class QuantizeStep:
    """The quantizer of one layer input (see the module docstring).

    Args:
        name: the quantizer's name.
        quantizer: its module (scale, scheme and scheme parameter are read from it when they change).
        source: where its input ``x`` is read (through an activation), or an :class:`ImageInput`.
        fold: ``(pad, flatten)``: a constant zero padding (``F.pad`` amounts) or a flatten between the source and
            this quantizer, folded away: the levels live on the source's rows, the logical input is the padded
            or flattened value (the padded border's levels are 0 in every scheme, forever).

    Attributes:
        level: ``L_{t}``, ``[R, C]`` rows (``[B, C, P]`` planes for an image input).
        n_pix, nnz: this frame's active rows and messages; ``nnz > limit`` means the CSR list is partial.
        cap: the most messages worth listing (the readers' largest budget); ``limit``: this frame's (0 on a
            stream's first frame and after a frame past ``cap``).
        pix, ptr, ch, val: the CSR list (views into buffers shared with other quantizers, set by the plan).
    """

    kind = "quantize"

    def __init__(self, name: str, quantizer: Quantizer, source, fold=(None, False)):
        self.name = f"{name}:quantize"  # the quantizer is named after the first layer it feeds
        self.q, self.source = quantizer, source
        self.pad, self.flatten = fold
        self.image = isinstance(source, ImageInput)
        self.channels, self.rows = source.channels, source.shape[0] * source.pixels
        self.units = self.rows * self.channels
        self.level: np.ndarray | None = None
        self.cap = self.limit = 0
        self.busy = False
        self.n_pix = self.nnz = 0
        self.pix = self.ptr = self.ch = self.val = None
        self.scratch = None  # sd [C] or, for an image, (sd [C, BLOCK], flags [BLOCK])
        self.counting = False
        self.records: dict[str, list[torch.Tensor]] = {"x": [], "r": [], "s": []}
        self.version = None
        self.level_tensor: torch.Tensor | None = None

    def allocate(self, dtype: np.dtype) -> None:
        """The level state (zeros, the start of a stream)."""
        self.dtype = np.dtype(dtype)
        if self.image:
            b, c = self.source.shape[:2]
            self.level = np.zeros((b, c, self.source.pixels), self.dtype)  # planes, like the frame
            self.level_tensor = torch.from_numpy(self.level).view(self.source.shape)
        else:
            self.level = np.zeros((self.rows, self.channels), self.dtype)
            self.level_tensor = logical_view(torch.from_numpy(self.level), self.source.shape)

    # --- scales ------------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read ``k``, the scheme and its parameter from the module when one of them changed."""
        q = self.q
        version = (q.log_scale._version, q.scheme, q.scheme_param)
        if version == self.version:
            return
        self.version = version
        with torch.no_grad():
            k = q.message_scale.to(TORCH_DTYPES[self.dtype])  # in the model's dtype, as the simulation
        self.k_tensor = k
        scheme = _SCHEMES[q.scheme]
        self.kernel = QUANTIZE_PLANES[scheme] if self.image else QUANTIZE_ROWS[self.source.act, scheme]
        thr = q.scheme_param + 0.5 if q.scheme == HYSTERESIS else q.scheme_param
        self.thr = self.dtype.type(thr)  # compared in the model's dtype, as torch compares with a Python scalar
        k = k.detach().numpy()
        if self.image:
            self.k = np.ascontiguousarray(np.broadcast_to(k.reshape(-1), (self.channels,)), self.dtype)
        elif k.ndim == 0:
            self.k = np.full((1, self.channels), k, self.dtype)
        elif self.flatten:  # one scale per flattened feature c·P + p -> rows layout (P, C)
            p = self.source.pixels
            self.k = np.ascontiguousarray(k.reshape(self.channels, p).T, self.dtype)
        else:  # per channel: (C, 1, ...) or (F,)
            self.k = np.ascontiguousarray(k.reshape(1, self.channels), self.dtype)

    # --- running -----------------------------------------------------------------------------------------

    def run(self, fresh: bool) -> None:
        # list messages only where a reader may take them: not on a stream's first frame, nor while the last
        # frame's count was past every reader's budget (it is counted still, so the list comes back the frame
        # after activity drops)
        cap = self.limit = 0 if (fresh or self.busy) else self.cap
        if self.counting:
            before = self.level_tensor.clone()
        if self.image:
            sd, flags = self.scratch
            self.n_pix, self.nnz = self.kernel(self.source.frame, self.k, self.thr, self.level, cap, self.pix,
                                               self.ptr, self.ch, self.val, sd, flags)
        else:
            src = self.source
            st = src.storage
            rows, n = (st.all_rows, len(st.all_rows)) if fresh else st.visit()
            if n == 0:
                self.n_pix = self.nnz = 0
            else:
                self.n_pix, self.nnz = self.kernel(rows, n, st.rows, src.c0, src.lo, src.hi, self.k, self.thr,
                                                   self.level, cap, self.pix, self.ptr, self.ch, self.val, self.scratch)
        self.busy = self.nnz > self.cap
        if self.counting:
            self._record(before)

    def levels_logical(self) -> torch.Tensor:
        """``L_t`` as the source's logical ``[B, C, *S]`` (a view; channels-last for rows)."""
        return self.level_tensor

    def input_logical(self, frame: torch.Tensor | None = None) -> torch.Tensor:
        """The quantizer's input ``x`` as the graph has it (padded or flattened back), for op counting."""
        x = frame if self.image else self.source.logical()
        return self._unfold(x)

    def _unfold(self, t: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            t = F.pad(t, self.pad)
        return t.flatten(1) if self.flatten else t

    def _record(self, before: torch.Tensor) -> None:
        x = self.input_logical(torch.from_numpy(self.source.frame).view(self.source.shape) if self.image else None)
        level = self._unfold(self.level_tensor)
        self.records["x"].append(x.clone())
        if self.q.scheme == SIGMA_DELTA_SCHEME:
            self.records["r"].append(level.clone())
        else:  # the rounding network's integers at the same scale, as the simulation records them
            self.records["r"].append(torch.round(x * self.q.scale.detach().to(x.dtype)))
        self.records["s"].append(level - self._unfold(before))

    def state_nbytes(self) -> int:
        return self.level.nbytes
