"""Delta schemes side by side on real CNNs and real clips: the paper's Sigma-Delta, Sigma-Delta with hysteresis and the
peers' thresholded deltas (EvNets, DeltaCNN), each counted both ways, each against the frame skipper at its cost.

    python -m sigmadelta.paper.schemes [--out DIR] [--quick] [--models NAME ...]
    sigmadelta reproduce schemes [--out DIR] [--quick]

Protocol: the video experiment's (``sigmadelta.paper.imagenet_video``): scales learned on the training clip
(carphone) as a Rounding network at each λ; σ (for θ = τ·σ) and the spread bands measured there too. Then every test
clip as a stream of its own from zero state, all its frames: static jwpIntro and testMovie, moving cityCC0 and bikes,
the near-tie bigbuckbunny. Agreement is with the original network (top-1: same argmax; top-5: the argmax is in the
original's top 5), over all frames and over the decisive ones (the original's top-1 survives ±2 grey levels of
noise). Ops are means over all frames (the first, against zero state, included), in both conventions
(``sigmadelta.accounting``):

- **additions**: the paper's, ``|n|`` additions per integer message ``n`` and connection;
- **events**: the peers', one multiply-accumulate (2 ops, as the dense original's) per nonzero message and
  connection: like for like with the original, and with the frame skipper (the original on every N-th frame, its
  answer held, N = floor(original ops / events): it spends at least as much).

Schemes: the paper's at every λ of :data:`LAMS`; hysteresis ``h`` in :data:`HS` on the same scales; thresholds
``θ = τ·σ`` per layer, τ in :data:`TAUS`. Beyond both, some settings again with their bands spread across layers by
output sensitivity (:func:`sigmadelta.allocate_bands` on the training clip, at the same predicted error;
:data:`ALLOCATED`). For each clip the uniform threshold setting with the most events saved that keeps top-1 ≥ 90% and
top-5 ≥ 98% is the peers' tuned baseline; the best of our schemes (the paper's, hysteresis, every spread setting)
under the same bar is compared with it, and with the frame skipper at its cost. The defaults of
:data:`sigmadelta.recipes.SCHEME_DEFAULTS` are read off here: per scheme, the setting with the most events saved
that keeps top-1 ≥ 90% on both static clips. Wall-clock time is the engine benchmark's (``benchmarks/``: the event
engine against the original in NCHW and channels-last, interleaved), not this experiment's.

Writes ``schemes_<model>.png``, ``results_<model>.json`` (one per network, written as each finishes) and
``results.md`` (every network found in the folder).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models, recipes
from sigmadelta.learn.calibrate import calibrate_sweep
from sigmadelta.paper import default_out
from sigmadelta.paper._common import (AGREEMENT, STATIC, TEST_CLIPS, TRAIN_CLIP, evaluate_clips, judge_clips,
                                      load_clips, rounded)

MODELS = ("squeezenet1_1", "efficientnet-lite0")
# λ whose scales the video experiment learned (the same calibrations, read from the user cache)
LAMS = {"squeezenet1_1": (1e-11, 3e-11, 1e-10), "efficientnet-lite0": (3e-11, 1e-10)}
HS = {"squeezenet1_1": (0.5, 1.0, 2.0, 4.0), "efficientnet-lite0": (0.25, 0.5, 1.0)}
TAUS = {"squeezenet1_1": (0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5),  # fine near 90% top-1 on each clip
        "efficientnet-lite0": (0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2)}
# settings run again with the band spread by allocate_bands: thresholds τ, hysteresis (λ, h)
ALLOCATED = {"squeezenet1_1": dict(taus=(0.03, 0.05, 0.1, 0.2), hs=((1e-11, 1.0), (1e-11, 2.0), (3e-11, 2.0))),
             "efficientnet-lite0": dict(taus=(0.01, 0.02, 0.03, 0.05), hs=((3e-11, 0.25), (3e-11, 0.5)))}
TARGET = dict(best_events=10.0, vs_threshold=1.5, paper_additions={"testMovie": 4.0, "jwpIntro": 11.0})
CHUNK = 20
# the quick run: the model's default λ only (λ None: that one)
QUICK = dict(frames=6, train_frames=4, epochs=1, lams=(), hs=(0.5,), taus=(0.1,),
             allocated=dict(taus=(0.1,), hs=((None, 0.5),)), clips=("testMovie", "cityCC0"))
OUT = default_out("schemes")


def settings(lams, hs, taus, allocated: dict) -> list[dict]:
    """Every (scheme, λ, parameter, spread or not) evaluated; ``allocated``: ``taus`` and ``hs`` (λ, h) to spread."""
    def setting(scheme, lam, param, spread=False):
        name = "h" if scheme == "hysteresis" else "τ"
        label = scheme + ("" if scheme == "sigma-delta" else f" {name}={param:g}") + (
            "" if lam is None else f" λ={lam:g}") + (" allocated" if spread else "")
        return dict(scheme=scheme, lam=lam, param=param, allocated=spread, label=label)

    rows = []
    for lam in lams:
        rows.append(setting("sigma-delta", lam, 0.0))
        rows += [setting("hysteresis", lam, h) for h in hs]
    rows += [setting("threshold", None, tau) for tau in taus]
    rows += [setting("hysteresis", lam, h, True) for lam, h in allocated["hs"] if lam in lams]
    rows += [setting("threshold", None, tau, True) for tau in allocated["taus"]]
    return rows


def apply(net, setting: dict, scales: dict, stds: dict, train: torch.Tensor | None = None) -> None:
    """Put ``setting`` into ``net``: the scales of its λ and its scheme. A spread setting's per-quantizer parameters
    are allocated on ``train`` the first time and kept in ``setting["params"]``."""
    if setting["lam"] is not None:
        net.set_scales(scales[setting["lam"]])
    if setting["scheme"] == "threshold":
        net.set_scheme("threshold", theta=setting.get("params") or {n: setting["param"] * s for n, s in stds.items()})
    else:
        net.set_scheme(setting["scheme"], h=setting.get("params") or setting["param"])
    if setting.get("allocated") and "params" not in setting:
        setting["params"] = sigmadelta.allocate_bands(net, train).params


def peers(row: dict) -> bool:
    """The peers' scheme as they run it: thresholds θ = τ·σ, not spread."""
    return row["scheme"] == "threshold" and not row.get("allocated")


def meets(r: dict) -> bool:
    """A clip's row meets :data:`AGREEMENT` (top-1 and top-5 over all frames)."""
    return r["top1"] >= AGREEMENT["top1"] and r["top5"] >= AGREEMENT["top5"]


def best_under(rows: list[dict], clip: str, keep, convention: str = "events") -> dict | None:
    """The row that ``keep(row)`` accepts with the fewest ops of ``convention`` on ``clip`` that meets
    :data:`AGREEMENT`."""
    ok = [r for r in rows if keep(r) and clip in r["clips"] and meets(r["clips"][clip])]
    return min(ok, key=lambda r: r["clips"][clip][convention]) if ok else None


def compare(rows: list[dict], clip: str) -> dict:
    """The targets on one clip: the peers' tuned baseline, the best of ours (events) and the paper's scheme
    (additions) under :data:`AGREEMENT`, and how ours fares against the frame skipper at its cost."""
    baseline = best_under(rows, clip, peers)
    ours = best_under(rows, clip, lambda r: not peers(r))
    paper = best_under(rows, clip, lambda r: r["scheme"] == "sigma-delta", "additions")
    out = dict(baseline=baseline and baseline["label"], ours=ours and ours["label"], paper=paper and paper["label"])
    if ours:
        r = ours["clips"][clip]
        out.update(ours_reduction_events=r["reduction_events"], ours_top1=r["top1"], ours_top5=r["top5"],
                   ours_skip_n=r["skip"]["n"], ours_skip_top1=r["skip"]["top1_agreement"],
                   ours_beats_skip=r["top1"] > r["skip"]["top1_agreement"])
    if baseline:
        out["baseline_reduction_events"] = baseline["clips"][clip]["reduction_events"]
    if ours and baseline:
        out["vs_threshold"] = baseline["clips"][clip]["events"] / ours["clips"][clip]["events"]
    if paper:
        out["paper_reduction_additions"] = paper["clips"][clip]["reduction_additions"]
    return out


def defaults(rows: list[dict]) -> dict:
    """Per scheme (and λ of the scales), the uniform setting with the most events saved that keeps top-1 ≥ 90% on
    both static clips (sigma-delta: the most additions saved): what :data:`sigmadelta.recipes.SCHEME_DEFAULTS`
    should hold."""
    out = {}
    for scheme, convention in (("sigma-delta", "additions"), ("hysteresis", "events"), ("threshold", "events")):
        ok = [r for r in rows if r["scheme"] == scheme and not r.get("allocated") and all(
            r["clips"][c]["top1"] >= AGREEMENT["top1"] for c in STATIC if c in r["clips"])]
        if ok:
            best = min(ok, key=lambda r: sum(r["clips"][c][convention] for c in STATIC if c in r["clips"]))
            out[scheme] = dict(label=best["label"], param=best["param"], lam=best["lam"],
                               **{c: dict(reduction=best["clips"][c][f"reduction_{convention}"],
                                          top1=best["clips"][c]["top1"]) for c in STATIC if c in best["clips"]})
    return out


def run_model(model: str, out_dir: Path, quick: bool = False, progress: bool = True) -> dict:
    """Every setting on every clip for one network; writes ``results_<model>.json`` and returns it."""
    cfg = QUICK if quick else dict(frames=None, train_frames=None, epochs=5, lams=LAMS.get(model),
                                   hs=HS.get(model, HS["squeezenet1_1"]), taus=TAUS.get(model, TAUS["squeezenet1_1"]),
                                   allocated=ALLOCATED.get(model, ALLOCATED["squeezenet1_1"]),
                                   clips=tuple(TEST_CLIPS))
    start = time.perf_counter()
    bundle = models.get(model, progress=False)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    net.set_delta_dtype(net.dtype)  # increments in float32: the fast simulation, as in the video experiment
    train = data.load_clip(TRAIN_CLIP, bundle, max_frames=cfg["train_frames"])
    lam0 = recipes.scale_lam(model)
    lams = tuple(sorted(set(cfg["lams"] or ()) | {lam0}))
    allocated = dict(cfg["allocated"], hs=tuple((lam0 if lam is None else lam, h) for lam, h in cfg["allocated"]["hs"]))
    scales, todo = {}, list(lams)  # the video experiment's scales: read from the user cache (or learned again)
    while todo:
        try:
            calibrations = calibrate_sweep(net, train, todo, model=model, clip=TRAIN_CLIP, progress=progress,
                                           config=recipes.scale_config(model).replace(epochs=cfg["epochs"]))
        except FloatingPointError as e:  # the largest λ diverged: the curve goes without it
            print(f"{model}: {e}; dropping λ = {max(todo):g}", flush=True)
            todo.remove(max(todo))
            continue
        scales |= {c.lam: c.scales for c in calibrations}
        todo = []
    lams = tuple(lam for lam in lams if lam in scales)
    stds = net.input_std(train)
    clips = load_clips(bundle, cfg["clips"], cfg["frames"])
    decisive = judge_clips(net, bundle, clips)
    rows, skip_curves = [], {}
    for setting in settings(lams, cfg["hs"], cfg["taus"], allocated):
        t = time.perf_counter()
        apply(net, setting, scales, stds, train)
        res = evaluate_clips(net, None, clips, decisive, keep=not skip_curves)
        if not skip_curves:  # the frame skipper depends on the original's answers only: any evaluation has it
            skip_curves = {c: ev.frame_skip_curve(periods=range(1, 101)) for c, ev in res.pop("_evaluations").items()}
        row = dict(setting, clips=res, seconds=time.perf_counter() - t)
        rows.append(row)
        if progress:
            print(f"{model}: {setting['label']:<36}" + "".join(
                f" | {c} {r['reduction_events']:.2f}x ev. {r['top1']:.0%}/{r['top5']:.0%} (skip {r['skip']['n']}: "
                f"{r['skip']['top1_agreement']:.0%})" for c, r in row["clips"].items()) + f" [{row['seconds']:.0f} s]",
                flush=True)
    targets = {c: compare(rows, c) for c in clips}
    results = dict(model=model, train_clip=TRAIN_CLIP,
                   clips={c: dict(kind=TEST_CLIPS.get(c, "?"), frames=len(f), decisive=int(decisive[c].sum()))
                          for c, f in clips.items()},
                   lams=lams, default_lam=recipes.scale_lam(model), stds=stds,
                   scales={str(k): v for k, v in scales.items()}, rows=rows, targets=targets, defaults=defaults(rows),
                   frame_skip_curves=skip_curves,
                   agreement=AGREEMENT, target=TARGET, quick=quick, threads=torch.get_num_threads(),
                   torch=torch.__version__, seconds=time.perf_counter() - start)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"results_{model}.json").write_text(json.dumps(rounded(results), indent=1) + "\n")
    plot(results, out_dir / f"schemes_{model}.png")
    return results


# ---------------------------------------------------------------------------------------------------------
# figure and table

STYLE = {("sigma-delta", False): ("tab:green", "o"), ("hysteresis", False): ("tab:blue", "s"),
         ("threshold", False): ("tab:red", "^"), ("hysteresis", True): ("tab:cyan", "D"),
         ("threshold", True): ("tab:purple", "v")}


def plot(results: dict, path: Path) -> None:
    """Per clip: events saved against top-1 agreement, every scheme (additions dotted for the integer schemes), and
    the frame skipper's curve: a delta scheme is worth having where it lies above the skipper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clips = list(results["clips"])
    cols = min(3, len(clips))
    nrows = -(-len(clips) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.4 * cols, 4.4 * nrows), squeeze=False)
    for ax, clip in zip(axes.flat, clips):
        for (scheme, spread), (color, marker) in STYLE.items():
            family = [r for r in results["rows"] if r["scheme"] == scheme and r.get("allocated", False) == spread]
            for lam in sorted({r["lam"] for r in family}, key=lambda v: v or 0):
                rows = [r for r in family if r["lam"] == lam]
                if scheme == "hysteresis" and not spread:  # h = 0 is the paper's network: draw the curve from there
                    rows = [r for r in results["rows"] if r["scheme"] == "sigma-delta" and r["lam"] == lam] + rows
                alpha = 1.0 if lam in (None, results["default_lam"]) or spread else 0.4
                tag = scheme + (" spread" if spread else "") + ("" if lam is None else f" λ={lam:g}")
                y = [100 * r["clips"][clip]["top1"] for r in rows]
                ax.plot([r["clips"][clip]["reduction_events"] for r in rows], y, color=color, marker=marker,
                        alpha=alpha, label=f"{tag}, events")
                if scheme == "sigma-delta" or (scheme == "hysteresis" and not spread):
                    ax.plot([r["clips"][clip]["reduction_additions"] for r in rows], y, color=color, marker=marker,
                            mfc="none", ls=":", alpha=alpha, label=f"{tag}, additions")
        skip = results["frame_skip_curves"][clip]
        ax.plot([r["reduction"] for r in skip], [100 * r["top1_agreement"] for r in skip], ".", color="black", ms=4,
                label="frame skipping: the original on every N-th frame (N = 1…100)")
        ax.axhline(100 * AGREEMENT["top1"], color="black", lw=0.6, ls=":")
        ax.set(xscale="log", ylim=(0, 102), xlabel="fewer ops than the original (x, log)",
               ylabel="top-1 agreement (%)")
        info = results["clips"][clip]
        ax.set_title(f"{results['model']}: {clip} ({info['kind']}, {info['frames']} frames)", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(clips):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    keep = [i for i, lab in enumerate(labels) if "λ=" not in lab or f"λ={results['default_lam']:g}" in lab
            or "spread" in lab]
    fig.legend([handles[i] for i in keep], [labels[i] for i in keep], loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def _cell(row: dict | None, clip: str) -> str:
    if row is None:
        return "none meets the bar"
    r = row["clips"][clip]
    return (f"{row['label']}: {r['reduction_additions']:.2f}x additions, {r['reduction_events']:.2f}x events, "
            f"top-1 {r['top1']:.1%}, top-5 {r['top5']:.1%}")


def clip_rows(rows: list[dict], clip: str) -> list[str]:
    """One clip's table: every setting with ops, agreement (all, decisive), the frame skipper at its events, latency."""
    lines = ["| setting | additions (hybrid) | events | top-1 | top-5 | top-1 decisive | skip at equal events: N, "
             "top-1 | latency: delta vs skip (changes) |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r = row["clips"][clip]
        lat = r["latency"]
        latency = "no change" if not lat["changes"] else (
            f"{lat['delta']['mean_frames']:.2f} vs {lat['skip']['mean_frames']:.2f} ({lat['changes']})")
        lines.append(f"| {row['label']} | {r['reduction_additions']:.2f}x ({r['reduction_hybrid']:.2f}x) | "
                     f"{r['reduction_events']:.2f}x | {r['top1']:.1%} | {r['top5']:.1%} | {_pct(r['top1_decisive'])} | "
                     f"{r['skip']['n']}: {r['skip']['top1_agreement']:.1%} | {latency} |")
    return lines


def report(all_results: list[dict]) -> str:
    """The markdown of ``results.md``."""
    lines = ["# Delta schemes side by side", "",
             "Each clip a stream of its own from zero state. Ops: fewer than the original, mean per frame over all "
             "frames (the first included); additions = the paper's count (in brackets the hybrid's: each layer and "
             "frame dense where cheaper), events = 2 ops per nonzero message and connection. Agreement with the "
             "original over all frames, and over the decisive ones (the original's top-1 survives ±2 grey levels of "
             "noise, 3 draws). Skip: the original on every N-th frame, its answer held, N = floor(original ops / "
             "events): it spends at least as much. Latency: mean frames until the network shows the original's new "
             "answer, per change that lasts ≥ 3 frames. The bar: top-1 ≥ 90% and top-5 ≥ 98% over all frames.", ""]
    for res in all_results:
        lines += [f"## {res['model']}", ""]
        for clip, info in res["clips"].items():
            lines += [f"### {clip} ({info['kind']}, {info['frames']} frames, {info['decisive']} decisive)", ""]
            lines += clip_rows(res["rows"], clip)
            t = res["targets"][clip]
            lines += ["", f"- tuned thresholds (the peers): {_cell(_row(res, t['baseline']), clip)}",
                      f"- best of ours: {_cell(_row(res, t['ours']), clip)}"
                      + (f"; {t['vs_threshold']:.2f}x fewer events than the tuned thresholds" if "vs_threshold" in t
                         else "")
                      + (f"; the frame skipper at its cost (the original on every N-th frame, N = {t['ours_skip_n']}) "
                         f"agrees {t['ours_skip_top1']:.1%}" if "ours_skip_n" in t else ""),
                      f"- the paper's scheme: {_cell(_row(res, t['paper']), clip)}", ""]
        lines += ["### Defaults read off these curves (top-1 ≥ 90% on both static clips, most saved)", ""]
        for scheme, d in res["defaults"].items():
            lines.append(f"- {scheme}: {d['label']}: " + ", ".join(
                f"{c} {d[c]['reduction']:.2f}x at {d[c]['top1']:.1%}" for c in STATIC if c in d))
        lines.append("")
    return "\n".join(lines) + "\n"


def _row(res: dict, label: str | None) -> dict | None:
    return next((r for r in res["rows"] if r["label"] == label), None)


def run(out_dir=OUT, quick: bool = False, models_=MODELS, progress: bool = True) -> list[dict]:
    """Run every network in ``models_``, then write ``results.md`` over every ``results_*.json`` in ``out_dir``."""
    out_dir = Path(out_dir)
    for model in models_:
        run_model(model, out_dir, quick=quick, progress=progress)
    found = [json.loads(p.read_text()) for p in sorted(out_dir.glob("results_*.json"))]
    found = [r for r in found if all(isinstance(v, dict) for v in r["clips"].values())]  # this protocol's only
    found.sort(key=lambda r: MODELS.index(r["model"]) if r["model"] in MODELS else len(MODELS))
    (out_dir / "results.md").write_text(report(found))
    return found


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=OUT, help="output folder (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a few frames and settings: a smoke test, not results")
    p.add_argument("--models", nargs="*", default=list(MODELS), help="networks (default: %(default)s); none: "
                   "only rewrite results.md from the folder's results_*.json")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run(args.out, quick=args.quick, models_=args.models)


if __name__ == "__main__":
    main()
