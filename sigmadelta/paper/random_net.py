"""Figure 2 of O'Connor & Welling (2017): learned scales of a badly scaled random network reach the Pareto front
of 1000 random scale settings.

    python -m sigmadelta.paper.random_net [--out DIR] [--quick] [--seed 0]

A 100-100-100-100 ReLU network (no biases, ReLU after every layer, output included), weights N(0, 2/n_in)
times [0.5, 8, 0.25] per layer, 100 inputs x ~ N(0, I). Baseline: 1000 scale triples |N(3, 4²)| (mean 3, standard
deviation 4: the reference code draws ``abs(normal(loc=3, scale=4))``), each evaluated as a rounding network.
Learned: SGD on the log-scales for λ = 1e-7 … 1e-2, lr 0.003, 200 epochs, batch 10, L2 error on the raw outputs
(paper normalization: cost summed over the minibatch), evaluated every epoch on the 100 inputs.
Error = mean|ŷ − y| / mean|y|; computation = additions per sample (Σ_l ‖round(k_l x_l)‖₁ · 100).

Writes ``random_net.png``, ``results.json`` and ``results.md`` to the output folder.
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
from sigmadelta.learn.optimize import optimize_scales_sweep

# --- defaults (the paper's settings)
SIZES = (100, 100, 100, 100)
WEIGHT_MULTIPLIERS = (0.5, 8.0, 0.25)  # product 1: deliberately badly scaled
N_SAMPLES = 100
N_RANDOM = 1000
RANDOM_MEAN, RANDOM_STD = 3.0, 4.0  # |N(3, 4²)|
LAMS = tuple(10.0 ** e for e in range(-7, -1))  # 1e-7 … 1e-2
LR, EPOCHS, BATCH = 0.003, 200, 10
MARGIN = 0.05  # a random point "beats" a learned one if it is better by more than 5% in both error and additions
QUICK = dict(n_random=300, epochs=60, eval_every=3)
OUT = default_out("random_net")


def random_network(seed: int = 0) -> tuple[torch.nn.Sequential, torch.Tensor]:
    """The network and its 100 inputs ``[100, 100]``."""
    g = torch.Generator().manual_seed(seed)
    layers = []
    for n_in, n_out, mult in zip(SIZES[:-1], SIZES[1:], WEIGHT_MULTIPLIERS):
        linear = torch.nn.Linear(n_in, n_out, bias=False)
        with torch.no_grad():
            linear.weight.copy_(torch.randn(n_out, n_in, generator=g) * (2 / n_in) ** 0.5 * mult)
        layers += [linear, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers).eval(), torch.randn(N_SAMPLES, SIZES[0], generator=g)


@torch.no_grad()
def evaluate_scales(net, x: torch.Tensor, scale_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Error and additions per sample of the rounding network for each row of ``scale_sets`` ``[n, layers]``.

    Leaves the net's scales and mode as they were.
    """
    saved, mode = net.scales, net.mode
    true = net.set_mode("original")(x)
    net.set_mode("rounding")
    errors, ops = [], []
    for ks in scale_sets:
        net.set_scales(dict(zip(net.quantizers, ks.tolist())))
        net.reset()
        out = net(x)
        errors.append(((out - true).abs().mean() / true.abs().mean()).item())
        ops.append(net.op_counts().per_sample("rounding"))
    net.set_scales(saved)
    net.set_mode(mode)
    return np.array(errors), np.array(ops)


def beaten_by(point: tuple[float, float], errors: np.ndarray, ops: np.ndarray, margin: float = MARGIN) -> int:
    """How many random points have both error and additions more than ``margin`` below ``point``'s."""
    e, c = point
    return int(((errors < (1 - margin) * e) & (ops < (1 - margin) * c)).sum())


def run(out_dir=OUT, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    """Run the experiment, write the figure, ``results.json`` and ``results.md``; return the results."""
    cfg = dict(n_random=N_RANDOM, epochs=EPOCHS, eval_every=1) | (QUICK if quick else {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with sigmadelta.torch_threads(1):  # a tiny network: one thread is fastest, and much faster on a busy machine
        start = time.perf_counter()
        model, x = random_network(seed)
        net = sigmadelta.convert(model, x[:1])
        rng = np.random.default_rng(seed)
        random_scales = np.abs(rng.normal(RANDOM_MEAN, RANDOM_STD, size=(cfg["n_random"], len(SIZES) - 1)))
        random_errors, random_ops = evaluate_scales(net, x, random_scales)
        scale_config = sigmadelta.ScaleConfig(error="l2", lr=LR, epochs=cfg["epochs"], batch_size=BATCH,
                                              eval_every=cfg["eval_every"])
        histories = optimize_scales_sweep(net, x, LAMS, config=scale_config, progress=progress)
        seconds = time.perf_counter() - start

    learned = []
    for h in histories:
        end = h.final
        learned.append(dict(
            lam=h.lam, scales=list(end.scales.values()), error=end.rel_error, ops=end.ops_per_sample,
            beaten_by=beaten_by((end.rel_error, end.ops_per_sample), random_errors, random_ops),
            trajectory=dict(epoch=h.epochs, error=h.rel_errors, ops=h.ops,
                            scales=[list(e.scales.values()) for e in h.evaluations])))
    config = dict(sizes=SIZES, weight_multipliers=WEIGHT_MULTIPLIERS, n_samples=N_SAMPLES,
                  random=f"|N({RANDOM_MEAN}, {RANDOM_STD}^2)|", lams=LAMS, lr=LR, batch_size=BATCH, error="l2",
                  scale_config=scale_config.to_dict(),
                  normalization="paper", margin=MARGIN, seed=seed, quick=quick, **cfg)
    results = dict(config=config,
                   random=dict(scales=random_scales.tolist(), error=random_errors.tolist(), ops=random_ops.tolist()),
                   learned=learned, claim_holds=all(p["beaten_by"] == 0 for p in learned), seconds=seconds)
    (out_dir / "results.json").write_text(json.dumps(_rounded(results), indent=1))
    (out_dir / "results.md").write_text(table(results))
    plot(results, out_dir / "random_net.png")
    return results


def _rounded(obj, digits: int = 6):
    """``obj`` with every float rounded to ``digits`` significant digits (a smaller results.json)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v, digits) for v in obj]
    return obj


def table(results: dict) -> str:
    """The learned end points as a Markdown table."""
    margin = results["config"]["margin"]
    n_random = len(results["random"]["error"])
    lines = ["| λ | scales k₁, k₂, k₃ | error | additions / sample | random points better by "
             f">{margin:.0%} in both |", "|---|---|---|---|---|"]
    for p in results["learned"]:
        ks = ", ".join(f"{k:.3g}" for k in p["scales"])
        lines.append(f"| {p['lam']:.0e} | {ks} | {p['error']:.4f} | {p['ops']:,.0f} | "
                     f"{p['beaten_by']} of {n_random} |")
    best = int(np.argmin(results["random"]["error"]))
    lines += ["", f"Best random triple by error: {results['random']['error'][best]:.4f} at "
              f"{results['random']['ops'][best]:,.0f} additions / sample. "
              f"Claim (no random point beats a learned end point by >{margin:.0%} in both): "
              f"{'holds' if results['claim_holds'] else 'FAILS'}.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Two panels: layerwise scales (left), error against additions per sample (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grey = (0.6, 0.6, 0.6)
    learned = results["learned"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(learned)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.2), gridspec_kw=dict(width_ratios=[1, 1.5]))
    layers = np.arange(1, len(SIZES))

    # --- left: scales per layer
    left.plot(layers, np.array(results["random"]["scales"]).T, color=grey, lw=0.4, alpha=0.25)
    for p, c in zip(learned, colors):
        left.plot(layers, p["scales"], color=c, lw=2.5, marker="o")
    left.set(yscale="log", xticks=layers, xticklabels=[f"layer {i}" for i in layers], ylabel="scale k (log)",
             title="Scales per layer: random (grey), learned (colours: λ)")

    # --- right: error against computation
    ops = np.array(results["random"]["ops"])
    floor = 10 ** np.floor(np.log10(ops[ops > 0].min()) - 0.5)  # where "0 additions" is drawn
    right.scatter(np.maximum(ops, floor), results["random"]["error"], s=6, color=grey, alpha=0.6, lw=0,
                  label=f"{len(ops)} random scale triples")
    for p, c in zip(learned, colors):
        t = p["trajectory"]
        x = np.maximum(t["ops"], floor)
        zero = "  (→ 0 additions)" if p["ops"] == 0 else ""
        right.plot(x, t["error"], color=c, lw=1.2, marker=".", ms=3, label=f"λ = {p['lam']:.0e}{zero}")
        right.plot(x[-1], t["error"][-1], "X", color=c, ms=10, mec="black")
    t = learned[0]["trajectory"]  # every λ starts from the same scales
    right.plot(max(t["ops"][0], floor), t["error"][0], "o", color="white", mec="black", ms=8, zorder=5,
               label="start, k = 1 (all λ)")
    right.plot([], [], "X", color="white", mec="black", label="end of training")
    right.axvline(floor, color="black", lw=0.5, ls=":")
    right.annotate("0 additions", (floor, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                   textcoords="offset points", va="bottom", fontsize=8, rotation=90)
    right.set(xscale="log", yscale="log", xlabel="additions per sample (log)",
              ylabel="relative error  mean|ŷ − y| / mean|y|  (log)",
              title="Error against computation of the rounding network")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    right.grid(True, which="major", alpha=0.3)
    margin = results["config"]["margin"]
    verdict = (f"no random triple beats a learned end point by >{margin:.0%} in both" if results["claim_holds"]
               else f"some random triples beat learned end points by >{margin:.0%} in both")
    fig.suptitle("Random 100-100-100-100 ReLU network, weights scaled by [0.5, 8, 0.25]: "
                 f"{verdict}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"fewer random points and epochs: {QUICK}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    print(table(results))
    print(f"wrote {args.out} in {results['seconds']:.1f} s")


if __name__ == "__main__":
    main()
