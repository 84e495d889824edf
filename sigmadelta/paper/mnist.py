"""Figure 4 and Appendix E of O'Connor & Welling (2017): the pre-trained MNIST MLP as Rounding and Sigma-Delta
networks on MNIST and Temporal-MNIST, unoptimized (k = 1) and with scales learned for 10 values of λ.

    python -m sigmadelta.paper.mnist [--out DIR] [--quick]
    sigmadelta reproduce mnist [--out DIR] [--quick]

Settings (paper-notes 6 and 7.2): the package's pre-trained 784-200-200-10 ReLU MLP; scales learned on the
first 50,000 training images in data order with KL(rounded ‖ original) on the softmax outputs, plain SGD
lr 0.001, batch 10, 30 epochs, paper normalization (cost summed over the minibatch, error averaged), for 10 λ
log-spaced from 1e-10 to 1e-5, all λ trained at once. Each split of MNIST and of Temporal-MNIST is then run
as one long sequence, without resets.

Beyond the paper, on Temporal-MNIST, for three λ: the paper's learned scales fine-tuned for 5 more epochs (a) as
per-channel scales (one per input unit, lr 0.01) and (b) on the Sigma-Delta cost itself (Σ|k·Δx|·fan-out over
the training stream in Temporal-MNIST order), each compared with the paper's scales at the same λ.

Per row of ``results.json``: setting, λ, network (original-dense | original-sparse | rounding | sigma-delta),
dataset (mnist | temporal-mnist), split (train | test), kops_per_sample, class_error (percent),
l1_error (mean over samples of Σ_classes |softmax(ŷ) − softmax(y)| against the original), energy_nj (int32).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import sigmadelta
from sigmadelta.paper import default_out
from sigmadelta.data import mnist_clip
from sigmadelta.learn.optimize import optimize_scales_sweep

# --- defaults (the paper's settings)
LAMS = tuple(np.logspace(-10, -5, 10).tolist())
SCALES = sigmadelta.ScaleConfig(error="kl", lr=0.001, epochs=30, batch_size=10, eval_every=None)  # the paper's MNIST
TRAIN_SCALES_ON = 50_000  # the first 50,000 training images, as the network itself was trained (reference code)
BEYOND_LAMS = LAMS[5:8]  # ~6e-8, 2.2e-7, 7.7e-7: fine-tuned per channel and on the sigma-delta cost (beyond the paper)
FINETUNE_EPOCHS, FINETUNE_LR_PER_CHANNEL = 5, 0.01  # per-channel gradients are ~1/C of a layer's: a larger step
QUICK = dict(lams=(1e-9, 1e-7, 1e-6), epochs=2, train_scales_on=5_000, eval_train=5_000, eval_test=2_000,
             beyond_lams=(1e-7,), finetune_epochs=1)
CHUNK = 2_000  # time steps per clip-mode call: bounds memory only, state carries over
OUT = default_out("mnist")


@torch.no_grad()
def run_sequence(net: sigmadelta.SigmaDeltaNet, mode: str, stream: torch.Tensor) -> tuple[torch.Tensor, object]:
    """Run ``stream`` ``[N, 1, 784]`` as one sequence (no resets); outputs ``[N, 10]`` and the op counts."""
    net.set_mode(mode)
    out = torch.cat([net.run(stream[i:i + CHUNK]) for i in range(0, len(stream), CHUNK)])[:, 0]
    return out, net.op_counts()


def rows_for(net, setting: str, lam, datasets: dict, originals: dict) -> list[dict]:
    """results.json rows of one setting: rounding and sigma-delta, each dataset and split."""
    rows = []
    for (dataset, split), (stream, labels) in datasets.items():
        reference = originals[dataset, split]["out"]
        for network, mode, kind in (("rounding", "rounding", "rounding"), ("sigma-delta", "sigma-delta", "sigma_delta")):
            out, counts = run_sequence(net, mode, stream)
            l1 = (out.softmax(-1) - reference.softmax(-1)).abs().sum(-1).mean().item()
            rows.append(dict(setting=setting, **{"lambda": lam}, network=network, dataset=dataset, split=split,
                             kops_per_sample=counts.per_sample(kind) / 1e3,
                             muladd_kops_per_sample=counts.per_sample(f"{kind}_muladd") / 1e3,
                             class_error=100 * (out.argmax(-1) != labels).float().mean().item(),
                             l1_error=l1, energy_nj=counts.energy_nj(kind, per_sample=True)))
    return rows


def original_rows(net, datasets: dict) -> tuple[list[dict], dict]:
    rows, originals = [], {}
    for (dataset, split), (stream, labels) in datasets.items():
        out, counts = run_sequence(net, "original", stream)
        originals[dataset, split] = dict(out=out)
        error = 100 * (out.argmax(-1) != labels).float().mean().item()
        for network, kind in (("original-dense", "dense"), ("original-sparse", "sparse")):
            rows.append(dict(setting="original", **{"lambda": None}, network=network, dataset=dataset, split=split,
                             kops_per_sample=counts.per_sample(kind) / 1e3, muladd_kops_per_sample=None,
                             class_error=error, l1_error=0.0, energy_nj=counts.energy_nj(kind, per_sample=True)))
    return rows, originals


def load_datasets(quick: bool) -> dict:
    """(dataset, split) -> (stream [N, 1, 784], labels [N])."""
    cfg = QUICK if quick else {}
    datasets = {}
    for split in ("train", "test"):
        for dataset in ("mnist", "temporal-mnist"):
            datasets[dataset, split] = mnist_clip(split, temporal=dataset == "temporal-mnist",
                                                  max_frames=cfg.get(f"eval_{split}"))
    return datasets


def run(out_dir=OUT, quick: bool = False, progress: bool = True) -> dict:
    """Run the experiment; write ``results.json``, ``appendix_e.md`` and ``figure4.png``; return the results."""
    cfg = dict(lams=LAMS, epochs=SCALES.epochs, train_scales_on=TRAIN_SCALES_ON, beyond_lams=BEYOND_LAMS,
               finetune_epochs=FINETUNE_EPOCHS) | (
        {k: v for k, v in QUICK.items() if not k.startswith("eval_")} if quick else {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    timings = {}

    bundle = sigmadelta.models.get("mnist-mlp", progress=progress)
    net = sigmadelta.convert(bundle.model, torch.zeros(1, 784))
    datasets = load_datasets(quick)
    rows, originals = original_rows(net, datasets)

    # --- the paper: scales learned on the rounding cost, shared by both networks and both datasets
    train = mnist_clip("train", temporal=False, max_frames=cfg["train_scales_on"])[0][:, 0]  # (N, 784), data order
    t = time.perf_counter()
    histories = optimize_scales_sweep(net, train, cfg["lams"], config=SCALES.replace(epochs=cfg["epochs"]),
                                      eval_data=train[:2_000], num_threads=1, progress=progress)
    timings["optimize_paper_s"] = time.perf_counter() - t
    net.set_scales({name: 1.0 for name in net.scales})
    rows += rows_for(net, "unoptimized", None, datasets, originals)
    learned = {}
    for h in histories:
        net.set_scales(h.final.scales)
        learned[h.lam] = h.final.scales
        rows += rows_for(net, "optimized", h.lam, datasets, originals)

    # --- beyond the paper, on Temporal-MNIST: starting from the paper's scales for a λ, fine-tune (a) one scale per
    # input unit, (b) on the sigma-delta cost itself, over the training stream in Temporal-MNIST order
    temporal_stream = mnist_clip("train", temporal=True, max_frames=cfg["train_scales_on"])[0]  # (N, 1, 784)
    temporal_only = {k: v for k, v in datasets.items() if k[0] == "temporal-mnist"}
    per_channel = sigmadelta.convert(bundle.model, torch.zeros(1, 784), per_channel_scales=True)
    timings["finetune_per_channel_s"] = timings["finetune_sigma_delta_cost_s"] = 0.0
    for lam in cfg["beyond_lams"]:
        for setting, target, data, kwargs in (
                ("per-channel", per_channel, train, dict(lr=FINETUNE_LR_PER_CHANNEL)),
                ("sigma-delta-cost", net, temporal_stream, dict(cost="sigma_delta"))):
            target.set_scales(learned[lam])
            t = time.perf_counter()
            config = SCALES.replace(lam=lam, epochs=cfg["finetune_epochs"], **kwargs)
            sigmadelta.optimize_scales(target, data, config=config, eval_data=data[:2_000], num_threads=1,
                                       progress=progress)
            timings[f"finetune_{setting.replace('-', '_')}_s"] += time.perf_counter() - t
            rows += rows_for(target, setting, lam, temporal_only, originals)
    timings["total_s"] = time.perf_counter() - start

    results = dict(config=dict(lr=SCALES.lr, batch_size=SCALES.batch_size, error=SCALES.error,
                               normalization=SCALES.normalization, scale_config=SCALES.to_dict(), quick=quick,
                               **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}),
                   rows=rows, learned_scales={f"{k:.3g}": v for k, v in learned.items()},
                   summary=summarize(rows), timings=timings)
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    (out_dir / "appendix_e.md").write_text(appendix_table(rows) + "\n" + summary_text(results["summary"]))
    plot(rows, out_dir / "figure4.png")
    return results


# ---------------------------------------------------------------------------------------------------------
# what the results show


def _find(rows, **match) -> list[dict]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def summarize(rows: list[dict]) -> dict:
    """The paper's claims, checked on the test split."""
    out = {}
    for dataset in ("mnist", "temporal-mnist"):
        (orig,) = _find(rows, network="original-dense", dataset=dataset, split="test")
        lam_rows = {n: _find(rows, setting="optimized", network=n, dataset=dataset, split="test")
                    for n in ("rounding", "sigma-delta")}
        reach = {n: [r for r in rs if r["class_error"] <= orig["class_error"] + 0.5
                     and r["kops_per_sample"] < orig["kops_per_sample"]] for n, rs in lam_rows.items()}
        sd_fewer = [sd["kops_per_sample"] < rd["kops_per_sample"] for sd, rd in zip(lam_rows["sigma-delta"],
                                                                                     lam_rows["rounding"])]
        within = [r for r in _find(rows, network="sigma-delta", dataset=dataset, split="test")
                  if r["class_error"] <= orig["class_error"] + 0.3]
        best = min(within, key=lambda r: r["kops_per_sample"], default=None)
        out[dataset] = dict(
            original_class_error=orig["class_error"], original_dense_kops=orig["kops_per_sample"],
            rounding_reaches_original=bool(reach["rounding"]), sigma_delta_reaches_original=bool(reach["sigma-delta"]),
            sigma_delta_fewer_ops_than_rounding_at_every_lambda=all(sd_fewer),
            sigma_delta_fewer_ops_than_rounding_count=f"{sum(sd_fewer)} of {len(sd_fewer)}",
            fewest_sigma_delta_kops_within_0p3=None if best is None else dict(
                setting=best["setting"], **{"lambda": best["lambda"]}, kops_per_sample=best["kops_per_sample"],
                class_error=best["class_error"], reduction_vs_dense_ops=orig["kops_per_sample"] / best["kops_per_sample"],
                reduction_vs_macs=orig["kops_per_sample"] / 2 / best["kops_per_sample"]))
    return out


def summary_text(summary: dict) -> str:
    lines = ["## What the results show (test split)", ""]
    for dataset, s in summary.items():
        lines.append(f"- **{dataset}**: original {s['original_class_error']:.2f}% error at "
                     f"{s['original_dense_kops']:.1f} k dense ops. Reaches the original's error (+0.5 points) with "
                     f"fewer ops than dense: rounding {'yes' if s['rounding_reaches_original'] else 'no'}, sigma-delta "
                     f"{'yes' if s['sigma_delta_reaches_original'] else 'no'}. Sigma-delta fewer ops than rounding: "
                     f"{s['sigma_delta_fewer_ops_than_rounding_count']} λ.")
        best = s["fewest_sigma_delta_kops_within_0p3"]
        if best:
            lam = "k = 1" if best["lambda"] is None else f"λ = {best['lambda']:.2g}"
            lines.append(f"  Fewest sigma-delta additions within 0.3 points of the original: "
                         f"**{best['kops_per_sample']:.1f} k per sample** ({best['setting']}, {lam}; "
                         f"{best['class_error']:.2f}% error): {best['reduction_vs_dense_ops']:.1f}x fewer than the "
                         f"dense ops, {best['reduction_vs_macs']:.1f}x fewer than its multiply-accumulates.")
    return "\n".join(lines) + "\n"


def appendix_table(rows: list[dict]) -> str:
    """Appendix E's layout: per setting and network, k-ops on test (dense\\sparse for the original), class error
    train\\test, int32 energy on test, for each dataset."""
    lines = []
    for dataset in ("mnist", "temporal-mnist"):
        lines += [f"### {dataset}", "", "| setting | λ | network | k-ops / sample (test) | class error % (train\\test) "
                  "| L1 error (test) | energy nJ / sample (test) |", "|---|---|---|---|---|---|---|"]
        test = _find(rows, dataset=dataset, split="test")
        dense, sparse = (_find(test, network=n)[0] for n in ("original-dense", "original-sparse"))
        train_err = _find(rows, dataset=dataset, split="train", network="original-dense")[0]["class_error"]
        lines.append(f"| original | | dense\\sparse | {dense['kops_per_sample']:.1f}\\{sparse['kops_per_sample']:.1f} "
                     f"| {train_err:.2f}\\{dense['class_error']:.2f} | 0 | {dense['energy_nj']:.1f}\\"
                     f"{sparse['energy_nj']:.1f} |")
        for r in test:
            if r["setting"] == "original":
                continue
            tr = _find(rows, dataset=dataset, split="train", setting=r["setting"], network=r["network"],
                       **{"lambda": r["lambda"]})
            train = f"{tr[0]['class_error']:.2f}" if tr else "–"
            lam = "" if r["lambda"] is None else f"{r['lambda']:.2g}"
            lines.append(f"| {r['setting']} | {lam} | {r['network']} | {r['kops_per_sample']:.1f} | {train}\\"
                         f"{r['class_error']:.2f} | {r['l1_error']:.4f} | {r['energy_nj']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Write :func:`figure4` to ``path``."""
    fig = figure4(rows)
    import matplotlib.pyplot as plt  # after figure4 chose the Agg backend

    fig.savefig(path, dpi=130)
    plt.close(fig)


def lam_range(lams) -> str:
    """The λ values of a curve in words, e.g. ``"λ = 1e-10 … 1e-5, 10 values"``, ``"λ = 1e-7"``."""
    lams = sorted(lams)
    short = [f"{lam:.0e}".replace("e-0", "e-").replace("e+0", "e") for lam in lams]
    if len(lams) == 1:
        return f"λ = {short[0]}"
    return f"λ = {short[0]} … {short[-1]}, {len(lams)} values"


def figure4(rows: list[dict]):
    """Figure 4: test class error (log) against ops and against energy, MNIST and Temporal-MNIST; the legend
    names the λ values actually run. Returns the matplotlib ``Figure``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 9), sharey=True)
    axes = axes.flatten()
    colors = {"rounding": "tab:blue", "sigma-delta": "tab:green"}
    for col, (x_key, x_label) in enumerate((("kops_per_sample", "k-ops per sample"), ("energy_nj", "energy nJ per sample (int32)"))):
        for j, dataset in enumerate(("mnist", "temporal-mnist")):
            ax = axes[2 * col + j]
            test = _find(rows, dataset=dataset, split="test")
            for network, color in colors.items():
                curve = sorted(_find(test, setting="optimized", network=network), key=lambda r: r["lambda"])
                ax.plot([r[x_key] for r in curve], [r["class_error"] for r in curve], "-o", color=color, ms=4,
                        label=f"{network} ({lam_range(r['lambda'] for r in curve)})")
                unopt = _find(test, setting="unoptimized", network=network)
                ax.plot([unopt[0][x_key]], [unopt[0]["class_error"]], "s", color=color, mfc="white", ms=7,
                        label=f"{network}, k = 1")
                for setting, marker in (("per-channel", "^"), ("sigma-delta-cost", "D")):
                    extra = _find(test, setting=setting, network=network)
                    if extra and dataset == "temporal-mnist" and network == "sigma-delta":
                        ax.plot([r[x_key] for r in extra], [r["class_error"] for r in extra], marker, color="tab:olive",
                                ms=6, label=f"sigma-delta, {setting} fine-tuned")
            dense, sparse = (_find(test, network=n)[0] for n in ("original-dense", "original-sparse"))
            ax.axhline(dense["class_error"], color="tab:red", lw=1)
            ax.plot([dense[x_key]], [dense["class_error"]], "o", color="tab:red", ms=8, label="original, dense")
            ax.plot([sparse[x_key]], [sparse["class_error"]], "o", color="tab:red", mfc="white", ms=8,
                    label="original, skipping zeros")
            ax.set(xscale="log", yscale="log", xlabel=x_label, title=f"{dataset} (test)")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.grid(True, which="both", alpha=0.25)
    for ax in axes[::2]:
        ax.set_ylabel("class error % (log)")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle("MNIST MLP 784-200-200-10: Rounding and Sigma-Delta networks over λ, against the original", fontsize=12)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"fewer samples, λ values and epochs: {QUICK}")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.out, quick=args.quick, progress=not args.no_progress)
    print(summary_text(results["summary"]))
    print(f"wrote {args.out} in {results['timings']['total_s']:.0f} s")


if __name__ == "__main__":
    main()
