"""The figures of the video experiment (:mod:`sigmadelta.paper.imagenet_video`): Figure 5 (ops, agreement and
frames over the stream), Figure 6 (how much each layer's input changes) and the λ trade-off curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sigmadelta.eval.plots import draw_disagreement, draw_ops

__all__ = ["plot_fig5", "plot_fig6", "plot_tradeoff", "short_class"]


def short_class(name: str) -> str:
    """An ImageNet class name up to its first comma ("tabby, tabby cat" -> "tabby")."""
    return name.split(",")[0]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _display(frame: torch.Tensor, preprocess) -> np.ndarray:
    """A preprocessed frame ``[3, H, W]`` back to an RGB image in [0, 1]."""
    mean, std = getattr(preprocess, "mean", None), getattr(preprocess, "std", None)
    x = frame.double()
    if mean is not None and std is not None:
        x = x * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
        x = x * getattr(preprocess, "unit", 255.0) / 255.0  # back to [0, 1]
        if getattr(preprocess, "channels", "RGB") == "BGR":
            x = x.flip(0)
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x.clamp(0, 1).permute(1, 2, 0).numpy()


def _short_layer(name: str) -> str:
    return name.replace("features.", "").replace("_blocks.", "b").replace("._", ".").replace("_conv", "").replace("depthwise", "dw") \
        .replace("expand", "exp").replace("project", "proj").lstrip("_")


def plot_fig5(ev, stream, segments, bundle, path: Path, lam: float, train_clip: str) -> None:
    """Figure 5: sampled frames with both networks' classes, computation per frame, cumulative disagreement,
    per-layer cost, layer-wise ratio of Sigma-Delta to Rounding cost."""
    plt = _plt()
    classes = bundle.classes
    n_thumbs = 6
    fig = plt.figure(figsize=(15, 15))
    grid = fig.add_gridspec(4, n_thumbs, height_ratios=[0.8, 1.3, 0.9, 1.3], hspace=0.4, top=0.93)
    per_clip = [np.linspace(a, b - 1, n_thumbs // len(segments)).round().astype(int) for _, a, b in segments]
    picks = np.concatenate(per_clip)[:n_thumbs]
    for i, t in enumerate(picks):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(_display(stream[t, 0], bundle.preprocess))
        o, s = ev.original_top5[t, 0, 0], ev.sigma_delta_top5[t, 0, 0]
        color = "black" if o == s else "tab:red"
        ax.set_title(f"frame {t}\noriginal: {short_class(classes[o])[:22]}\nsigma-delta: {short_class(classes[s])[:22]}",
                     fontsize=8.5, color=color)
        ax.axis("off")
    splice = segments[1][1] if len(segments) > 1 else None
    ax = fig.add_subplot(grid[1, :])
    draw_ops(ax, ev, splice)
    for name, a, b in segments:
        s = ev.summary(max(a, 1), b)
        ax.text((a + b) / 2, 0.04, f"{name}: original / sigma-delta = {s['reduction']:.2f}x\n"
                f"original / rounding = {s['reduction_rounding']:.2f}x", transform=ax.get_xaxis_transform(),
                ha="center",
                fontsize=9, bbox=dict(fc="white", ec="0.7", alpha=0.9))
    ax.set_title(f"Computation per frame (ops; λ = {lam:g}); dashed: the splice, no reset")
    ax = fig.add_subplot(grid[2, :])
    draw_disagreement(ax, ev, splice)
    # --- per-layer cost and SD / rounding ratio
    layers = ev.layers
    x = np.arange(len(layers))
    ax = fig.add_subplot(grid[3, :4])
    width = 0.27
    orig = [ev.ops_per_layer["original"][l].mean() for l in layers]
    ax.bar(x - width, orig, width, color="tab:red", label="original (dense)")
    for j, (name, a, b) in enumerate(segments[:2]):
        sd = [ev.ops_per_layer["sigma_delta"][l][max(a, 1):b].mean() for l in layers]
        ax.bar(x + j * width, sd, width, color=("tab:green", "darkgreen")[j], label=f"sigma-delta, {name}")
    ax.set(yscale="log", ylabel="ops per frame (log)", title="Cost per layer (mean over frames, without frame 0)")
    ax.set_xticks(x, [_short_layer(l) for l in layers], rotation=90, fontsize=6.5)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", which="both", alpha=0.25)
    ax = fig.add_subplot(grid[3, 4:])
    for j, (name, a, b) in enumerate(segments[:2]):
        rd = np.array([ev.ops_per_layer["rounding"][l][max(a, 1):b].mean() for l in layers])
        sd = np.array([ev.ops_per_layer["sigma_delta"][l][max(a, 1):b].mean() for l in layers])
        ax.plot(x, sd / np.maximum(rd, 1e-30), marker=".", color=("tab:green", "darkgreen")[j], label=name)
    ax.set(ylabel="sigma-delta / rounding ops", xlabel="layer (input → output)", ylim=(0, None),
           title="Layer-wise ratio of Sigma-Delta to Rounding cost")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.25)
    fig.suptitle(f"{bundle.name} on " + " → ".join(n for n, _, _ in segments) + f": Sigma-Delta network vs the "
                 f"original (scales learned on {train_clip})", fontsize=13)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def plot_fig6(ev, segments, path: Path) -> None:
    """Figure 6: per layer and frame, the L1 distance and the cosine similarity of adjacent frames' feature maps,
    with their per-layer means."""
    plt = _plt()
    maps = ev.feature_maps
    labels = ["0: input"] + [f"{i}: {_short_layer(m)}" for i, m in enumerate(maps) if i > 0]
    fig, axes = plt.subplots(2, 2, figsize=(15, 12), gridspec_kw=dict(width_ratios=[4, 1]))
    splice = segments[1][1] if len(segments) > 1 else None
    for row, (values, what, cmap) in enumerate(((ev.l1_distance, "L1 distance of adjacent frames' feature maps "
                                                 "(each scaled to unit L1 norm; 0 = same, 2 = disjoint)", "magma"),
                                                (ev.cosine_similarity, "cosine similarity of adjacent frames' "
                                                 "feature maps", "viridis"))):
        ax = axes[row, 0]
        im = ax.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap)
        if splice is not None:
            ax.axvline(splice - 0.5, color="white", lw=1, ls="--")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set(xlabel="frame", ylabel="layer (feature map = input of the layer's quantizer)", title=what)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        ax = axes[row, 1]
        for name, a, b in segments:
            ax.plot(np.nanmean(values[:, max(a, 1):b], 1), np.arange(len(labels)), marker=".", label=name)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_yticks(range(len(labels)), [str(i) for i in range(len(labels))], fontsize=6)
        ax.set(xlabel="mean over frames", title="per-layer mean")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("How much each layer's input changes between neighbouring frames (Figure 6)", fontsize=13)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_tradeoff(results: dict, path: Path) -> None:
    """Per clip, top-1 agreement against the reduction in ops over λ (additions, and events dashed), uniform scales,
    and the frame skipper's curve (the original on every N-th frame, its answer held): a delta network is worth
    having where its curve lies above the skipper's."""
    plt = _plt()
    clips = list(results["config"]["clips"])
    cols = min(3, len(clips))
    rows = -(-len(clips) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.3 * rows), squeeze=False)
    for ax, clip in zip(axes.flat, clips):
        curve = results["curve"]
        y = [100 * p["clips"][clip]["top1"] for p in curve]
        ax.plot([p["clips"][clip]["reduction_additions"] for p in curve], y, marker="o", color="tab:green",
                label="sigma-delta, learned scales (additions)")
        ax.plot([p["clips"][clip]["reduction_events"] for p in curve], y, marker="o", mfc="white", ls="--",
                color="tab:purple", label="the same, events")
        for p, x, yy in zip(curve, [p["clips"][clip]["reduction_additions"] for p in curve], y):
            ax.annotate(f"{p['lam']:.0e}", (x, yy), textcoords="offset points", xytext=(3, 3), fontsize=6.5,
                        color="tab:green")
        ax.scatter([p["clips"][clip]["reduction_additions"] for p in results["uniform"]],
                   [100 * p["clips"][clip]["top1"] for p in results["uniform"]], marker="s", color="tab:blue",
                   alpha=0.5, label="uniform k " + ", ".join(f"{p['scales']:g}" for p in results["uniform"]))
        skip = results["frame_skip_curves"][clip]
        ax.plot([r["reduction"] for r in skip], [100 * r["top1_agreement"] for r in skip], ".", color="tab:gray",
                ms=4, label="frame skipping (the original on every N-th frame, N = 1…100)")
        ax.axhline(100 * results["target"]["top1"], color="black", ls=":", lw=0.8)
        ax.axvline(1.0, color="tab:red", lw=1)
        info = results["config"]["clips"][clip]
        ax.set(xscale="log", ylim=(0, 102), title=f"{clip} ({info['kind']}, {info['frames']} frames)",
               xlabel="fewer ops than the original (x, log)", ylabel="top-1 agreement (%)")
        ax.grid(True, which="both", alpha=0.25)
    for ax in list(axes.flat)[len(clips):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    cfg = results["config"]
    fig.suptitle(f"Trade-off over λ: {cfg['model']}, scales learned on {cfg['train_clip']}; each clip its own stream",
                 fontsize=12)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
