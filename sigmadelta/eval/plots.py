"""Figures of a stream's evaluation (:class:`~sigmadelta.eval.video.StreamEvaluation`): ops per frame of each network
and the cumulative disagreement with the original. Figures are returned, and written atomically on request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._utils.files import atomic_write
from .video import StreamEvaluation

__all__ = ["stream_figure", "long_stream_figure", "save_figure", "plot_stream", "draw_ops", "draw_disagreement",
           "rolling_mean", "COLORS", "LABELS"]


def stream_figure(ev: StreamEvaluation, title: str = "", splice: int | None = None):
    """The per-frame figure: ops of the three networks (log y) and cumulative top-1/top-5 disagreement, legends
    beside the axes (never over a curve). Returns the matplotlib ``Figure``, not saved (see :func:`save_figure`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True, gridspec_kw=dict(height_ratios=[2, 1]))
    draw_ops(top, ev, splice, legend_outside=True)
    draw_disagreement(bottom, ev, splice, legend_outside=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path, suffix: str | None = None) -> None:
    """Write ``fig`` to ``path`` at 110 dpi in the format of ``suffix`` (default: ``path``'s own; PNG without
    one), then close it."""
    import matplotlib.pyplot as plt

    fmt = (Path(path).suffix if suffix is None else suffix).lstrip(".").lower() or "png"
    try:
        fig.savefig(path, dpi=110, format=fmt)
    finally:
        plt.close(fig)


def plot_stream(ev: StreamEvaluation, path, title: str = "", splice: int | None = None) -> None:
    """Write :func:`stream_figure` to ``path`` (format from its suffix), atomically: a temporary file, then a rename."""
    fig = stream_figure(ev, title, splice)
    path = Path(path)
    atomic_write(path, lambda tmp: save_figure(fig, tmp, path.suffix))


COLORS = {"original": "tab:red", "rounding": "tab:blue", "sigma_delta": "tab:green", "sigma_delta_hybrid": "tab:olive",
          "sigma_delta_events": "tab:purple"}
LABELS = {"original": "original (dense)", "rounding": "rounding", "sigma_delta": "sigma-delta (additions)",
          "sigma_delta_events": "sigma-delta (events)",
          "sigma_delta_hybrid": "sigma-delta, dense where cheaper"}


def draw_ops(ax, ev: StreamEvaluation, splice: int | None = None, legend_outside: bool = False) -> None:
    """Ops per frame of the three networks, and of the hybrid (dotted), on a log axis; the legend in the upper
    right corner, or beside the axes (``legend_outside``)."""
    t = np.arange(ev.frames)
    for n in ("original", "rounding", "sigma_delta", "sigma_delta_hybrid", "sigma_delta_events"):
        ax.plot(t, ev.ops[n], color=COLORS[n], lw=1.4, label=LABELS[n], ls=":" if n == "sigma_delta_hybrid" else "-")
    if splice is not None:
        ax.axvline(splice - 0.5, color="black", lw=0.8, ls="--")
    ax.set(yscale="log", ylabel="ops per frame (log)", title="Computation per frame")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(**_legend_place(legend_outside, "upper right"))


def draw_disagreement(ax, ev: StreamEvaluation, splice: int | None = None, legend_outside: bool = False) -> None:
    """Cumulative top-1 and top-5 disagreement with the original, in percent; legend as in :func:`draw_ops`."""
    t = np.arange(ev.frames)
    ax.plot(t, 100 * (1 - ev.cumulative(ev.top1_agree)), color="tab:purple", lw=1.6,
            label="top-1: sigma-delta argmax ≠ original argmax")
    ax.plot(t, 100 * (1 - ev.cumulative(ev.top5_agree)), color="tab:orange", lw=1.6,
            label="top-5: sigma-delta argmax ∉ original top 5")
    if splice is not None:
        ax.axvline(splice - 0.5, color="black", lw=0.8, ls="--")
    ax.set(xlabel="frame", ylabel="cumulative disagreement (%)", ylim=(0, None),
           title="Disagreement with the original network (cumulative mean)")
    ax.grid(True, alpha=0.25)
    ax.legend(**_legend_place(legend_outside, "upper left"))


def rolling_mean(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each frame (fewer at the start): ``out[t] = mean(values[max(0, t −
    window + 1):t + 1])``."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    t = np.arange(1, len(values) + 1)
    start = np.maximum(0, t - window)
    return (sums[t] - sums[start]) / (t - start)


def long_stream_figure(ev: StreamEvaluation, title: str = "", window: int = 25):
    """Agreement and ops against frame index over one long stream, so that drift would show: ops per frame of the
    original, the delta network (additions and events) and the frame skipper at the same events (log y); below, the
    top-1 agreement of the delta network and of that skipper over the last ``window`` frames and cumulative, with
    the frames that are not decisive marked. Returns the ``Figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .metrics import class_agreement, held_answers

    t = np.arange(ev.frames)
    skip = ev.judged()["frame_skip"]["events"]
    held = held_answers(ev.original_top5, skip["n"])
    skip_top1 = class_agreement(held, ev.original_top5)[0].mean(1)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 6.5), sharex=True, gridspec_kw=dict(height_ratios=[1, 1]))
    for n in ("original", "sigma_delta", "sigma_delta_events"):
        top.plot(t, ev.ops[n], color=COLORS[n], lw=1.2, label=LABELS[n])
    top.axhline(ev.ops["original"].mean() / skip["reduction"], color="tab:gray", ls="--", lw=1.2,
                label=f"frame skipping: the original on every N-th frame, N = {skip['n']} (mean)")
    top.set(yscale="log", ylabel="ops per frame (log)", title="Computation per frame")
    top.grid(True, which="both", alpha=0.25)
    top.legend(**_legend_place(True, "upper right"))
    bottom.plot(t, 100 * rolling_mean(ev.top1_agree, window), color="tab:green", lw=1.6,
                label=f"delta network, last {window} frames")
    bottom.plot(t, 100 * ev.cumulative(ev.top1_agree), color="tab:green", lw=1, ls=":", label="delta network, cumulative")
    bottom.plot(t, 100 * rolling_mean(skip_top1, window), color="tab:gray", lw=1.6,
                label=f"frame skipping (N = {skip['n']}), last {window} frames")
    if ev.decisive is not None:
        loose = np.flatnonzero(~ev.decisive.all(1))
        bottom.plot(loose, np.full(len(loose), 1.0), "|", color="tab:red", ms=8,
                    label="frames the original's answer does not survive noise")
    bottom.set(xlabel="frame", ylabel="top-1 agreement (%)", ylim=(0, 102),
               title="Top-1 agreement with the original over the stream")
    bottom.grid(True, alpha=0.25)
    bottom.legend(**_legend_place(True, "lower left"))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _legend_place(outside: bool, corner: str) -> dict:
    if outside:  # to the right of the axes, top-aligned
        return dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    return dict(loc=corner, fontsize=9)
