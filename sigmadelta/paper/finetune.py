"""Beyond the paper: fine-tuning the weights and scales for the Sigma-Delta cost, against the paper's scale-only
method, on the MNIST MLP (Temporal-MNIST) and on ImageNet networks, judged on the test clips.

    python -m sigmadelta.paper.finetune [--out DIR] [--quick] [--models squeezenet1_1 ...] [--no-mnist]
    sigmadelta reproduce finetune [--out DIR] [--quick]

MNIST: the pre-trained 784-200-200-10 MLP, scales k = 1 (frozen), weights fine-tuned on Temporal-MNIST's training
stream (:func:`sigmadelta.recipes.finetune_config`), for several λ; Sigma-Delta additions per digit and class error
on Temporal-MNIST's test stream (one sequence), beside the paper's scale-only results (the committed
``results/mnist/results.json``, Temporal-MNIST test rows).

Image models, for the events cost: scales calibrated the paper's way on carphone (cached), then weights and scales
fine-tuned on carphone + synthetic camera motion over scikit-image's train photos
(:func:`sigmadelta.data.synthetic.training_set`; never a test clip), cached by content, with the events surrogate
(``tanh(k|Δx| / (1 + h))`` per unit and frame pair, times its fan-out: one message per unit at most, as the peers
count). Every scheme: the paper's (trained as its Rounding network), hysteresis (trained as the Sigma-Delta network
with hysteresis, window by window), and the peers' thresholds on the fine-tuned weights (θ = τ·σ, σ measured on
carphone through them; :data:`THRESHOLD_TAUS`): the fine-tuning code trains no threshold network, so they ride on
weights trained for the events of hysteresis. Each run (:data:`IMAGE_RUNS`) is evaluated before (its starting point)
and after, on every test clip as a stream of its own from zero state, against the unmodified original: events and
additions, agreement over all and decisive frames, the frame skipper at the same events, the agreement of the
fine-tuned weights' own dense network (the ceiling they leave), and events per layer. Whether a point moves the
front: the best top-1 of the schemes experiment's settings (committed ``results/schemes/results_<model>.json``, not
fine-tuned) at as many events saved or more, against the point's.

Writes ``results.json``, ``results.md`` and ``finetune_tradeoff.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import SchemeConfig, configure_scheme, data, models, recipes
from sigmadelta.learn.calibrate import calibrate
from sigmadelta.learn.finetune import ALLOCATION_FRAMES, finetune, finetune_cached, training_clips
from sigmadelta.paper import default_out
from sigmadelta.paper._common import (AGREEMENT, TEST_CLIPS, TRAIN_CLIP, evaluate_clips, judge_clips, load_clips,
                                      rounded)

# --- defaults
MNIST_LAMS = (1e-6, 3e-6)
IMAGE_MODELS = ("squeezenet1_1", "efficientnet-lite0")
# one fine-tuning run per entry: the scheme trained (h for hysteresis), the λ of the calibration that sets the initial
# scales, the λ of fine-tuning (per frame, on the events surrogate), and any FinetuneConfig field changed
# (``allocate``: h spread across the quantizers by output sensitivity first, as `reproduce schemes`' spread settings)
IMAGE_RUNS = {
    "squeezenet1_1": (dict(scheme="sigma-delta", cal=1e-11, lam=1e-10),
                      dict(scheme="sigma-delta", cal=1e-11, lam=3e-10),
                      dict(scheme="hysteresis", h=1.0, cal=1e-11, lam=1e-10),
                      dict(scheme="hysteresis", h=1.0, cal=1e-11, lam=3e-10),
                      dict(scheme="hysteresis", h=1.0, allocate=True, cal=1e-11, lam=1e-10),
                      dict(scheme="hysteresis", h=1.0, cal=1e-11, lam=3e-10, lr_weights=0.0)),
    "efficientnet-lite0": (dict(scheme="sigma-delta", cal=3e-11, lam=1e-10),
                           dict(scheme="hysteresis", h=0.25, cal=3e-11, lam=1e-10),
                           dict(scheme="hysteresis", h=0.25, allocate=True, cal=3e-11, lam=1e-10)),
}
THRESHOLD_TAUS = {"squeezenet1_1": (0.03, 0.05, 0.1), "efficientnet-lite0": (0.01, 0.02)}
SURROGATE = "events"
CALIBRATION = dict(lr=0.1, epochs=5)  # the paper's VGG-19 protocol, as the video experiment
TARGET = dict(top1=AGREEMENT["top1"], top5=AGREEMENT["top5"], events_testMovie=10.0, mnist_kops=20.0,
              mnist_error_margin=0.3)
QUICK = dict(mnist_lams=(3e-6,), mnist_steps=200, image_steps=4, test_frames=8, clips=("testMovie", "cityCC0"),
             image_runs=(dict(scheme="hysteresis", h=1.0, cal=1e-10, lam=1e-10),), taus=(0.1,), train=(TRAIN_CLIP,),
             calibration=dict(frames=6, epochs=1))
OUT = default_out("finetune")


# ---------------------------------------------------------------------------------------------------------
# MNIST


@torch.no_grad()
def mnist_eval(net, stream, labels) -> dict:
    net.set_mode("sigma-delta")
    out = torch.cat([net.run(stream[i:i + 2000]) for i in range(0, len(stream), 2000)])[:, 0]
    counts = net.op_counts()
    net.set_mode("original")
    return dict(kops_per_digit=counts.per_sample("sigma_delta") / 1e3,
                kops_per_layer={k: v / counts.steps / 1e3 for k, v in counts.per_layer("sigma_delta").items()},
                class_error=100 * (out.argmax(-1) != labels).float().mean().item())


def mnist_part(cfg: dict, progress: bool) -> dict:
    bundle = models.get("mnist-mlp", progress=progress)
    train = data.mnist_clip("train", temporal=True)[0]
    test, labels = data.mnist_clip("test", temporal=True, max_frames=cfg.get("mnist_test"))
    original = sigmadelta.convert(bundle.model, torch.zeros(1, 784))
    with torch.no_grad():
        original_error = 100 * (bundle.model(test[:, 0]).argmax(-1) != labels).float().mean().item()
    rows = []
    start = sigmadelta.convert(bundle.model, torch.zeros(1, 784))
    rows.append(dict(setting="k = 1, not fine-tuned", lam=None, **mnist_eval(start, test, labels)))
    config = recipes.finetune_config("mnist-mlp").replace(**({"steps": cfg["mnist_steps"]} if "mnist_steps" in cfg else {}))
    for lam in cfg["mnist_lams"]:
        net = copy.deepcopy(original)
        t = time.perf_counter()
        result = finetune(net, train, lam, config, model="mnist-mlp", progress=progress)
        rows.append(dict(setting="fine-tuned", lam=lam, seconds=time.perf_counter() - t,
                         **mnist_eval(net, test, labels)))
    return dict(original_error=original_error, config=config.to_dict(), rows=rows,
                scale_only=paper_scale_only_rows(), final_train_error=result.record["error"][-1])


def paper_scale_only_rows() -> list[dict]:
    """The paper's scale-only results on Temporal-MNIST test (the MNIST experiment's committed results)."""
    path = default_out("mnist") / "results.json"
    if not path.is_file():
        return []
    rows = json.loads(path.read_text())["rows"]
    return [dict(setting=r["setting"], lam=r["lambda"], kops_per_digit=r["kops_per_sample"],
                 class_error=r["class_error"]) for r in rows
            if r["dataset"] == "temporal-mnist" and r["split"] == "test" and r["network"] == "sigma-delta"]


# ---------------------------------------------------------------------------------------------------------
# image models


def _label(run: dict) -> str:
    scheme = "sigma-delta" if run["scheme"] == "sigma-delta" else f"hysteresis h {run['h']:g}" + (
        " spread" if run.get("allocate") else "")
    extra = "".join(f", {k} {v:g}" for k, v in run.items() if k not in ("scheme", "h", "allocate", "cal", "lam"))
    return f"{scheme}, scales λ {run['cal']:g}, fine-tuned λ {run['lam']:g}{extra}"


def schemes_front(model: str) -> list[dict]:
    """The settings of the schemes experiment (committed ``results/schemes/results_<model>.json``), not fine-tuned:
    ``label`` and per clip the row, for judging whether a fine-tuned point moves the front."""
    path = default_out("schemes") / f"results_{model}.json"
    if not path.is_file():
        return []
    results = json.loads(path.read_text())
    if results.get("quick") or any("clips" not in r for r in results["rows"]):  # a smoke test, or another protocol
        return []
    return [dict(label=r["label"], clips=r["clips"]) for r in results["rows"]]


def front_top1(front: list[dict], clip: str, reduction: float) -> dict | None:
    """The schemes setting with the best top-1 on ``clip`` among those saving at least ``reduction`` events."""
    ok = [r for r in front if clip in r["clips"] and r["clips"][clip]["reduction_events"] >= reduction]
    return max(ok, key=lambda r: r["clips"][clip]["top1"]) if ok else None


def image_part(model: str, cfg: dict, progress: bool, init_k: float | None = None, on_point=None) -> dict:
    """Scale-only and fine-tuned points of ``model``, every scheme; calibration starts from ``k = init_k`` (default:
    the model's recipe, :func:`sigmadelta.recipes.scale_config`). ``on_point(part)`` is called with the part so
    far after each point (a long run keeps what it has)."""
    init_k = recipes.scale_config(model).init_scale if init_k is None else init_k
    bundle = models.get(model, progress=progress)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    clips = load_clips(bundle, cfg["clips"], cfg["test_frames"])
    decisive = judge_clips(original, bundle, clips)
    train_clips, names = training_clips(bundle, cfg.get("train"))
    carphone = data.load_clip(TRAIN_CLIP, bundle)
    calibration = CALIBRATION | {k: v for k, v in cfg.get("calibration", {}).items() if k != "frames"}
    calibration_frames = carphone[:cfg.get("calibration", {}).get("frames")]
    config = recipes.finetune_config(model).replace(surrogate=SURROGATE, **(
        {"steps": cfg["image_steps"]} if "image_steps" in cfg else {}))
    runs = cfg.get("image_runs") or IMAGE_RUNS.get(model, (dict(scheme="sigma-delta", cal=recipes.scale_lam(model),
                                                                 lam=recipes.finetune_lam(model)),))
    taus = cfg.get("taus") or THRESHOLD_TAUS.get(model, (0.05,))
    front = schemes_front(model)
    points, calibrated = [], {}
    part = dict(model=model, init_scale=init_k, train=names, config=config.to_dict(),
                clips={c: dict(kind=TEST_CLIPS.get(c, "?"), frames=len(f), decisive=int(decisive[c].sum()))
                       for c, f in clips.items()}, front_from=len(front), points=points)

    def evaluate(net, what: str, run: dict, **extra) -> dict:
        t = time.perf_counter()
        res = evaluate_clips(net, original, clips, decisive, own_dense=what != "scales only (paper)")
        point = dict(method=what, **run, **extra, clips=res, seconds=time.perf_counter() - t)
        for clip, r in res.items():  # the best not fine-tuned setting that saves at least as many events
            best = front_top1(front, clip, r["reduction_events"])
            r["front"] = None if best is None else dict(label=best["label"], top1=best["clips"][clip]["top1"],
                                                        reduction_events=best["clips"][clip]["reduction_events"])
        points.append(point)
        if on_point is not None:
            on_point(part)
        if progress:
            print(f"{model}: {what}: {_label(run) if 'lam' in run else run}: " + " | ".join(
                f"{c} {r['reduction_events']:.2f}x ev. {r['top1']:.0%}/{r['top5']:.0%}" for c, r in res.items()),
                flush=True)
        return point

    for run in runs:
        scheme = SchemeConfig() if run["scheme"] == "sigma-delta" else SchemeConfig(
            "hysteresis", run["h"], allocate_bands=bool(run.get("allocate")))
        start_key = (run["cal"], run.get("h"), bool(run.get("allocate")))
        if start_key not in calibrated:  # the paper's method at this λ (with the scheme): the starting point
            if run["cal"] not in calibrated:
                net = copy.deepcopy(original)
                calibrate(net, calibration_frames, run["cal"], model=model, clip=TRAIN_CLIP, progress=progress,
                          init_scale=init_k, **calibration)
                calibrated[run["cal"]] = net
            net = copy.deepcopy(calibrated[run["cal"]])
            if run.get("h") is not None:  # as fine-tuning starts: h spread on the first training clip's frames
                configure_scheme(net, scheme, train_clips[0][:ALLOCATION_FRAMES])
            calibrated[start_key] = net
            evaluate(net, "scales only (paper)", dict(scheme=run["scheme"], h=run.get("h"),
                                                      allocate=bool(run.get("allocate")), cal=run["cal"],
                                                      lam=run["cal"]))
        tuned = copy.deepcopy(calibrated[run["cal"]])
        changes = {k: v for k, v in run.items() if k not in ("scheme", "h", "allocate", "cal", "lam")}
        run_config = config.replace(scheme=scheme, **changes)
        ft = finetune_cached(tuned, train_clips, run["lam"], run_config, model=model, meta={"train": names},
                             progress=progress)
        evaluate(tuned, "fine-tuned", run, checkpoint=str(ft.path), cached=ft.cached,
                 train_seconds=ft.record["seconds"], label=_label(run))
        if run_config.lr_weights > 0:  # the peers' thresholds on the weights fine-tuned for events
            for tau in taus:
                tuned.set_scheme("threshold", tau=tau, calibration=carphone)
                evaluate(tuned, "fine-tuned weights, thresholds", dict(run, threshold_tau=tau),
                         label=f"threshold τ {tau:g} on the weights of: {_label(run)}")
    return part


# ---------------------------------------------------------------------------------------------------------
# report


def report(results: dict) -> str:
    lines = ["# Fine-tuning for the Sigma-Delta cost", ""]
    m = results.get("mnist")
    if m:
        lines += [f"## MNIST MLP on Temporal-MNIST test (original: {m['original_error']:.2f}% error, "
                  f"397.2 k ops/digit dense)", "",
                  "| method | λ | SD k-additions / digit | class error % | per layer (k) |", "|---|---|---|---|---|"]
        for r in m["scale_only"]:
            lam = "" if r["lam"] is None else f"{r['lam']:.2g}"
            lines.append(f"| paper, scales only ({r['setting']}) | {lam} | {r['kops_per_digit']:.1f} | "
                         f"{r['class_error']:.2f} | |")
        for r in m["rows"]:
            layers = ", ".join(f"{v:.1f}" for v in r["kops_per_layer"].values())
            lam = "" if r["lam"] is None else f"{r['lam']:.2g}"
            lines.append(f"| {r['setting']} | {lam} | {r['kops_per_digit']:.1f} | {r['class_error']:.2f} | {layers} |")
        lines.append("")
    for part in results.get("images", []):
        lines += [f"## {part['model']}: fine-tuned for events on {', '.join(part['train'])} (scales from k = "
                  f"{part['init_scale']:g}); each test clip its own stream, never trained on", "",
                  "Front: the best top-1 of the schemes experiment's settings (not fine-tuned) that save at least as "
                  "many events; a point moves the front where its top-1 is higher. Own dense: the fine-tuned weights "
                  "run as the original network (the ceiling they leave).", ""]
        for clip, info in part["clips"].items():
            lines += [f"### {clip} ({info['kind']}, {info['frames']} frames, {info['decisive']} decisive)", "",
                      "| method | setting | additions | events | top-1 | top-5 | top-1 decisive | own dense top-1 | "
                      "skip at equal events: N, top-1 | front at these events: top-1 (setting) |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for pt in part["points"]:
                r = pt["clips"][clip]
                front = "—" if r.get("front") is None else f"{r['front']['top1']:.1%} ({r['front']['label']})"
                own = "—" if "dense_top1" not in r else f"{r['dense_top1']:.1%}"
                lines.append(f"| {pt['method']} | {point_label(pt)} | "
                             f"{r['reduction_additions']:.2f}x | {r['reduction_events']:.2f}x | {r['top1']:.1%} | "
                             f"{r['top5']:.1%} | {_pct(r['top1_decisive'])} | {own} | {r['skip']['n']}: "
                             f"{r['skip']['top1_agreement']:.1%} | {front} |")
            lines.append("")
        lines += per_layer_table(part)
    lines.append("Paper (VGG-19, its own ImageNet video): 11x fewer ops on a static shot, 4x with a moving camera.")
    return "\n".join(lines) + "\n"


def _pct(v) -> str:
    return "—" if v is None else f"{v:.0%}"


def per_layer_table(part: dict, clips=("testMovie", "cityCC0")) -> list[str]:
    """Events per layer (M per frame) of every fine-tuned run against its starting point, on the clips named."""
    key = lambda p: (p["scheme"], p.get("h"), bool(p.get("allocate")), p["cal"])
    starts = {key(p): p for p in part["points"] if p["method"] == "scales only (paper)"}
    tuned = [p for p in part["points"] if p["method"] == "fine-tuned"]
    clips = [c for c in clips if c in part["clips"]]
    if not tuned or not clips or "layers" not in tuned[0]["clips"][clips[0]]:
        return []
    lines = ["### Events per layer (M ops per frame): starting point → fine-tuned", ""]
    for pt in tuned:
        before = starts.get(key(pt))
        if before is None:
            continue
        lines += [f"{pt['label']}:", "", "| layer | original | " + " | ".join(f"{c}: before → after" for c in clips)
                  + " |", "|---|---|" + "---|" * len(clips)]
        for layer, row in pt["clips"][clips[0]]["layers"].items():
            lines.append(f"| {layer} | {row['original'] / 1e6:.1f} | " + " | ".join(
                f"{before['clips'][c]['layers'][layer]['events'] / 1e6:.2f} → "
                f"{pt['clips'][c]['layers'][layer]['events'] / 1e6:.2f}" for c in clips) + " |")
        lines.append("")
    return lines


def point_label(point: dict) -> str:
    """A point's setting: its ``label``, or (a starting point) the scheme and the λ of its scales."""
    if point.get("label"):
        return point["label"]
    h = point.get("h")
    return (f"hysteresis h {h:g}" + (" spread" if point.get("allocate") else "") if point.get("scheme") == "hysteresis"
            else "sigma-delta") + f", scales λ {point['cal']:g}"


def plot(results: dict, path: Path) -> None:
    """Per image model and clip: top-1 against events saved, the schemes experiment's settings (grey), the starting
    points and the fine-tuned ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = results.get("images", [])
    if not parts:
        return
    clips = list(parts[0]["clips"])
    fig, axes = plt.subplots(len(parts), len(clips), figsize=(4.2 * len(clips), 3.8 * len(parts)), squeeze=False)
    for row, part in zip(axes, parts):
        front = schemes_front(part["model"])
        for ax, clip in zip(row, clips):
            if clip not in part["clips"]:
                ax.axis("off")
                continue
            pts = [(r["clips"][clip]["reduction_events"], 100 * r["clips"][clip]["top1"]) for r in front if clip in r["clips"]]
            if pts:
                ax.scatter(*zip(*pts), color="0.6", s=14, label="schemes experiment (not fine-tuned)")
            for method, marker, color in (("scales only (paper)", "o", "tab:blue"), ("fine-tuned", "*", "tab:green"),
                                          ("fine-tuned weights, thresholds", "^", "tab:red")):
                sel = [p for p in part["points"] if p["method"] == method]
                if sel:
                    ax.scatter([p["clips"][clip]["reduction_events"] for p in sel],
                               [100 * p["clips"][clip]["top1"] for p in sel], marker=marker, s=70, color=color,
                               label=method)
            ax.axhline(100 * TARGET["top1"], ls=":", color="gray", lw=1)
            ax.set(xscale="log", ylim=(0, 102), title=f"{part['model']}: {clip}", xlabel="fewer events (x)",
                   ylabel="top-1 (%)")
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(out_dir=OUT, quick: bool = False, image_models=IMAGE_MODELS, mnist: bool = True,
        progress: bool = True, init_k: float | None = None, runs=None) -> dict:
    """Run the experiment; write ``results.json``, ``results.md`` and ``finetune_tradeoff.png``.

    Parts not run this time (``mnist=False``, image models not named) are kept from an existing ``results.json``
    (read when writing), so the parts can run one at a time, or side by side in two processes.
    """
    cfg = dict(mnist_lams=MNIST_LAMS, test_frames=None, clips=tuple(TEST_CLIPS)) | (QUICK if quick else {})
    if quick:
        cfg["mnist_test"] = 2000
    if runs:
        cfg["image_runs"] = tuple(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.set_num_threads(1)
    done = dict(quick=quick, threads=1, torch=torch.__version__, target=TARGET, images=[])
    for m in image_models:  # each model's part is written point by point (write merges parts by model)
        done["images"].append(image_part(m, cfg, progress, init_k,
                                         on_point=lambda part: write(out_dir, dict(done, images=[part]))))
    if mnist:
        done["mnist"] = mnist_part(cfg, progress)
    done["seconds"] = time.perf_counter() - start
    return write(out_dir, done)


def write(out_dir: Path, done: dict) -> dict:
    """Merge ``done`` into ``out_dir/results.json`` (image parts by model) and write the table and figure."""
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("quick", done["quick"]) != done["quick"]:
        results = {}  # a quick run never mixes with a full one
    key = lambda p: (p["model"], p.get("init_scale"))
    ran = {key(p) for p in done["images"]}
    images = [p for p in results.get("images", []) if key(p) not in ran] + done["images"]
    results.update({k: v for k, v in done.items() if k != "images"}, images=images)
    path.write_text(json.dumps(rounded(results), indent=1) + "\n")
    (out_dir / "results.md").write_text(report(results))
    plot(results, out_dir / "finetune_tradeoff.png")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help=f"a first look: {QUICK}")
    parser.add_argument("--models", nargs="*", default=list(IMAGE_MODELS), help="image models (default: %(default)s)")
    parser.add_argument("--no-mnist", action="store_true", help="skip the MNIST MLP")
    parser.add_argument("--init-scale", type=float, help="calibration starts from this k (default: the model's)")
    parser.add_argument("--runs", nargs="*", metavar="CAL:LAM[:H]", help="(calibration λ, fine-tuning λ[, h of the "
                        "hysteresis scheme]), e.g. 1e-11:1e-10 or 1e-11:1e-10:1 (default: IMAGE_RUNS)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    runs = [tuple(float(v) for v in r.split(":")) for r in args.runs or ()]
    if any(len(r) not in (2, 3) for r in runs):
        parser.error("--runs: each run is CAL:LAM or CAL:LAM:H (H: hysteresis), e.g. 1e-11:1e-10")
    runs = [dict(scheme="sigma-delta", cal=r[0], lam=r[1]) if len(r) == 2 else
            dict(scheme="hysteresis", h=r[2], cal=r[0], lam=r[1]) for r in runs]
    start = time.perf_counter()
    results = run(args.out, quick=args.quick, image_models=args.models, mnist=not args.no_mnist,
                  progress=not args.no_progress, init_k=args.init_scale, runs=runs)
    print(report(results))
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
