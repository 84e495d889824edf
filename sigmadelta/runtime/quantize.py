"""The sparse engine's quantizer step: the level recurrence of each delta scheme, on changed rows only."""

from __future__ import annotations

from collections import defaultdict

import torch

from ..core.functional import LEVEL_FUNCTIONS, SIGMA_DELTA_SCHEME
from ..core.modules import Quantizer
from .values import ALL, Step, Value

__all__ = ["QuantizeStep"]


class QuantizeStep(Step):
    """The quantizer Δ∘Q of one layer input, on its changed rows only.

    .. math:: r_t = f(k x_t, r_{t-1}), \\qquad s_t = r_t - r_{t-1}

    with ``f`` the level recurrence of the quantizer's scheme, the one function of :mod:`sigmadelta.core.functional`
    that the dense simulation also calls (``round`` for the paper's scheme, ``k = 1`` for the threshold scheme).
    Every scheme's ``f`` is idempotent (``f(v, f(v, L)) = f(v, L)``), so rows whose input did not change keep
    their level and are skipped. ``r`` is formed in the model's dtype, as in the simulation, so both see the
    same levels. For an input
    in row layout the message is the active rows ``act`` (rows with a nonzero ``s``) and their integers
    ``s_act [n_act, C]`` (:meth:`message`, computed only when a consumer takes its sparse path); for a small
    flat input (fully connected layers) it is the whole ``s``.

    When the whole input changed (``ALL``), ``r_t`` is rounded into a spare buffer that then swaps with
    ``r_{t-1}`` (no copy), and ``s_act`` is formed lazily from the two. If the consumer ran densely on the last
    frame, the activity is not measured (``n_act`` unknown, so the consumer stays dense) for 1, 2, 4, then
    :attr:`max_skip` frames between measurements: a layer in a busy region pays only ``round(k x)``.
    """

    kind = "quantize"
    max_skip = 8  # a busy layer measures its activity again after 1, 2, 4, then every 8 frames

    def __init__(self, name: str, quantizer: Quantizer, x: Value):
        super().__init__(name)
        self.q, self.x = quantizer, x
        self.rowwise = x.row_layout
        self.r_last = torch.zeros_like(x.rows if self.rowwise else x.buf)  # (R, C) or the flat shape
        self.r_spare = torch.zeros_like(self.r_last) if self.rowwise else None  # r_{t-1} after a swap
        self.numel_rows = x.nrows if self.rowwise else self.r_last.numel()
        self.max_active = float("inf")  # the most active rows for which some consumer runs sparse
        self.scale_version = -1
        self.counting = False
        self.records: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.reset()

    def _logical(self, rows: torch.Tensor) -> torch.Tensor:
        x = self.x
        return rows.view(x.buf.shape[0], *x.shape[2:], x.channels).movedim(-1, 1) if self.rowwise else rows

    @property
    def r_logical(self) -> torch.Tensor:
        """``r_t`` as the input's logical ``[B, C, *S]`` (a view)."""
        return self._logical(self.r_last)

    def reset(self) -> None:
        self.r_last.zero_()
        self.n_act = 0
        self.act = self.s_act = self.s_full = None
        self.known = True  # whether n_act / act are measured this frame
        self.busy = False  # the last measured frame was too active for any consumer's sparse path
        self.skip = self.countdown = 0  # frames left before the activity of a busy layer is measured again
        self.records.clear()

    def _scales(self) -> None:
        """Cache ``k`` (in the model's dtype, as the simulation computes it) until the scale changes."""
        version = (self.q.log_scale._version, self.q.scheme, self.q.scheme_param)
        if version == self.scale_version:
            return
        self.scale_version = version
        self.level = LEVEL_FUNCTIONS[self.q.scheme]
        self.level_param = self.q.scheme_param
        with torch.no_grad():
            k = self.q.message_scale.to(self.r_last.dtype)
        self.k = k  # () or the per-channel shape, broadcasting over the logical value
        self.k_rows = k.reshape(-1) if (self.rowwise and k.dim() > 0) else k  # broadcasting over rows (n, C)
        self.k_scalar = float(k) if k.dim() == 0 else None

    def message(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(act, s_act)``: the active rows and their integers ``[n_act, C]``."""
        if self.s_act is None:  # after a swap: r_spare holds r_{t-1}
            self.s_act = self.r_last.index_select(0, self.act) - self.r_spare.index_select(0, self.act)
        return self.act, self.s_act

    def run(self, fresh: bool) -> None:
        self._scales()
        x, dirty = self.x, self.x.dirty
        self.known = True
        if self.counting:
            r_before = self.r_logical.clone()
        if dirty is None and not fresh:
            self.n_act = 0
        elif not self.rowwise and self.max_active < 0:  # every consumer runs densely: only "changed or not?"
            r = self.level(x.buf * self.k, self.r_last, self.level_param)
            self.n_act = 0 if torch.equal(r, self.r_last) else self.numel_rows
            self.r_last.copy_(r)
        elif not self.rowwise:
            r = self.level(x.buf * self.k, self.r_last, self.level_param)
            self.s_full = s = r - self.r_last  # (B, F): integers
            self.r_last.copy_(r)
            self.act = s.view(-1).nonzero().squeeze(1)  # (nnz,) flat indices, sorted by stream
            self.n_act = self.act.numel()
        elif fresh or dirty is ALL:
            r = self.r_spare
            torch.mul(x.rows, self.k_rows, out=r)  # (R, C)
            self.level(r, self.r_last, self.level_param, out=r)
            if not fresh and self.busy and self.countdown > 0:
                self.countdown -= 1
                self.known, self.n_act, self.act = False, self.numel_rows, None  # consumers stay dense
            else:
                # rows with a nonzero integer; float |Δ| sums vectorise far better than bool ne().any() here
                self.act = torch.sub(r, self.r_last).abs_().sum(1).nonzero().squeeze(1)  # (n_act,)
                self.n_act = self.act.numel()
                busy = 0 < self.n_act > self.max_active and not fresh  # a stream's start says nothing
                self.skip = min(2 * self.skip, self.max_skip) if (busy and self.busy) else 1
                self.busy, self.countdown = busy, self.skip
            self.r_last, self.r_spare = r, self.r_last
            self.s_act = None  # formed on demand by message()
        else:
            r_before_dirty = self.r_last.index_select(0, dirty)
            r = self.level(x.rows.index_select(0, dirty) * self.k_rows, r_before_dirty, self.level_param)  # (n_dirty, C)
            s = r - r_before_dirty
            self.r_last.index_copy_(0, dirty, r)
            active = s.abs().sum(1).nonzero().squeeze(1)  # positions in dirty of the active rows
            self.act = dirty.index_select(0, active)
            self.s_act = s.index_select(0, active)
            self.n_act = self.act.numel()
            self.busy = 0 < self.n_act > self.max_active
        if self.counting:
            self.records["x"].append(x.buf.clone())
            rounded = self.r_logical if self.q.scheme == SIGMA_DELTA_SCHEME else torch.round(x.buf * self.q.scale)
            self.records["r"].append(rounded.clone())  # the rounding network's integers, as in the simulation
            self.records["s"].append(self.r_logical - r_before)

    def state_nbytes(self) -> int:
        n = self.r_last.numel() * self.r_last.element_size()
        return n * 2 if self.r_spare is not None else n

