"""Beyond the paper: fine-tuning the weights and scales for the Sigma-Delta cost, against the paper's scale-only
method, on the MNIST MLP (Temporal-MNIST) and on ImageNet networks (static and moving test clips).

    python -m sigmadelta.paper.finetune [--out DIR] [--quick] [--models squeezenet1_1 ...] [--no-mnist]
    sigmadelta reproduce finetune [--out DIR] [--quick]

MNIST: the pre-trained 784-200-200-10 MLP, scales k = 1 (frozen), weights fine-tuned on Temporal-MNIST's training
stream (:func:`sigmadelta.recipes.finetune_config`), for several λ; Sigma-Delta additions per digit and class error
on Temporal-MNIST's test stream (one sequence), beside the paper's scale-only results (the committed
``results/mnist/results.json``, Temporal-MNIST test rows).

Image models: scales calibrated the paper's way on carphone (cached), then fine-tuned on carphone + synthetic
camera motion over scikit-image's train photos (:func:`sigmadelta.data.synthetic.training_set`), cached by
content. Runs with a third number ``h`` (:data:`IMAGE_RUNS`) fine-tune the hysteresis scheme instead, and their
starting point is the calibrated net with that hysteresis. Test stream, never trained on: bigbuckbunny (100 frames, static shot) then bikes (100 frames, panning),
no reset, as in the video experiment. Agreement is with the unmodified original. Reductions: original ops /
Sigma-Delta additions (the paper's convention) and original multiply-adds / events (nonzero integers × fan-out,
the peers' convention).

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
from sigmadelta import SchemeConfig, data, models, recipes
from sigmadelta.learn.calibrate import calibrate
from sigmadelta.learn.finetune import finetune, finetune_cached, training_clips
from sigmadelta.paper import default_out
from sigmadelta.paper._common import evaluate_segments
from sigmadelta.paper.imagenet_video import load_stream

# --- defaults
MNIST_LAMS = (1e-6, 3e-6)
IMAGE_MODELS = ("squeezenet1_1", "efficientnet-lite0")
# (λ of the calibration that sets the initial scales, λ of fine-tuning[, h: the hysteresis scheme])
IMAGE_RUNS = {"squeezenet1_1": ((1e-10, 3e-11), (1e-10, 1e-10), (1e-10, 3e-10), (1e-11, 1e-10), (1e-11, 3e-10),
                                (1e-11, 3e-11, 1.0), (1e-11, 3e-11, 2.0), (1e-11, 1e-10, 1.0), (3e-11, 1e-10, 1.0)),
              "efficientnet-lite0": ((1e-10, 1e-10),)}
TEST_CLIPS = (("bigbuckbunny", 100), ("bikes", 100))
CALIBRATION = dict(lr=0.1, epochs=5)  # the paper's VGG-19 protocol, as the video experiment
TARGET = dict(static=11.0, moving=4.0, top1=0.90, top5=0.98, mnist_kops=20.0, mnist_error_margin=0.3)
QUICK = dict(mnist_lams=(3e-6,), mnist_steps=200, image_steps=4, test_frames=(8, 8), image_runs=((1e-10, 1e-10),))
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


def image_part(model: str, cfg: dict, progress: bool, init_k: float | None = None) -> dict:
    """Scale-only and fine-tuned points of ``model``; calibration starts from ``k = init_k`` (default: the
    model's recipe, :func:`sigmadelta.recipes.scale_config`)."""
    init_k = recipes.scale_config(model).init_scale if init_k is None else init_k
    bundle = models.get(model, progress=progress)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    stream, segments = load_stream(bundle, tuple((n, f) for (n, _), f in zip(TEST_CLIPS, cfg["test_frames"])))
    clips, names = training_clips(bundle)
    config = recipes.finetune_config(model).replace(**({"steps": cfg["image_steps"]} if "image_steps" in cfg else {}))
    runs = cfg.get("image_runs") or IMAGE_RUNS.get(model, ((recipes.scale_lam(model), recipes.finetune_lam(model)),))
    points, calibrated = [], {}
    for init_lam, lam, *hysteresis in runs:
        h = hysteresis[0] if hysteresis else None
        scheme = dict(scheme="sigma-delta") if h is None else dict(scheme="hysteresis", h=h)
        if (init_lam, h) not in calibrated:  # the paper's method at this λ (with the scheme): the starting point
            if init_lam not in calibrated:
                net = copy.deepcopy(original)
                calibrate(net, data.load_clip("carphone", bundle), init_lam, model=model, clip="carphone",
                          progress=progress, init_scale=init_k, **CALIBRATION)
                calibrated[init_lam] = calibrated[init_lam, None] = net
            net = copy.deepcopy(calibrated[init_lam])
            if h is not None:
                net.set_scheme("hysteresis", h=h)
            calibrated[init_lam, h] = net
            points.append(dict(method="scales only (paper)", lam=init_lam, init_lam=init_lam, **scheme,
                               **evaluate_segments(net, original, stream, segments)))
        tuned = copy.deepcopy(calibrated[init_lam])
        run_config = config if h is None else config.replace(scheme=SchemeConfig("hysteresis", h))
        run = finetune_cached(tuned, clips, lam, run_config, model=model, meta={"train": names}, progress=progress)
        points.append(dict(method="fine-tuned", lam=lam, init_lam=init_lam, **scheme, checkpoint=str(run.path),
                           cached=run.cached, train_seconds=run.record["seconds"],
                           **evaluate_segments(tuned, original, stream, segments)))
    return dict(model=model, init_scale=init_k, train=names, config=config.to_dict(),
                segments=[dict(clip=n, start=a, stop=b) for n, a, b in segments], points=points)


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
        lines += [f"## {part['model']}, calibration from k = {part.get('init_scale', 16):g} (test: "
                  f"{', '.join(s['clip'] for s in part['segments'])}; never trained on)", "",
                  "| method | scheme | scales from λ | λ | clip | reduction (additions) | reduction (events) | top-1 "
                  "| top-5 |", "|---|---|---|---|---|---|---|---|---|"]
        for p in part["points"]:
            for s in part["segments"]:
                r = p[s["clip"]]
                lines.append(f"| {p['method']} | {_scheme_label(p)} | {p.get('init_lam', p['lam']):g} | "
                             f"{p['lam']:g} | {s['clip']} | "
                             f"{r['reduction']:.2f}x | "
                             f"{r['reduction_events']:.2f}x | {100 * r['top1_agreement']:.0f}% | "
                             f"{100 * r['top5_agreement']:.0f}% |")
        lines.append("")
    lines.append("Paper (VGG-19, its own ImageNet video): 11x fewer ops on a static shot, 4x with a moving camera.")
    return "\n".join(lines) + "\n"


def _scheme_label(point: dict) -> str:
    return f"hysteresis h = {point['h']:g}" if point.get("scheme") == "hysteresis" else "sigma-delta"


def scale_only_curve(model: str, clip: str) -> list[tuple[float, float]]:
    """(reduction, top-1 %) of the video experiment's committed λ sweep for ``model`` on ``clip``, if present."""
    path = default_out(f"video_{model}") / "results.json"
    if not path.is_file():
        return []
    curve = json.loads(path.read_text()).get("curve", [])
    return sorted((p[clip]["reduction"], 100 * p[clip]["top1_agreement"]) for p in curve if clip in p)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, clip, goal in zip(axes, ("bigbuckbunny", "bikes"), (TARGET["static"], TARGET["moving"])):
        drawn = set()
        for part, color in zip(results.get("images", []), ("C0", "C1", "C2", "C3")):
            curve = [] if part["model"] in drawn else scale_only_curve(part["model"], clip)
            drawn.add(part["model"])
            if curve:
                ax.plot(*zip(*curve), "-", color="gray", alpha=0.5, lw=1,
                        label=f"{part['model']}: scales only, the video experiment's λ sweep")
            for method, marker in (("scales only (paper)", "o"), ("fine-tuned", "*")):
                for hysteresis, fill in ((False, color), (True, "none")):
                    pts = [p for p in part["points"] if p["method"] == method and clip in p
                           and (p.get("scheme") == "hysteresis") == hysteresis]
                    if not pts:
                        continue
                    ax.scatter([p[clip]["reduction"] for p in pts], [100 * p[clip]["top1_agreement"] for p in pts],
                               marker=marker, s=80, edgecolors=color, facecolors=fill,
                               label=f"{part['model']}, calibrated from k = {part.get('init_scale', 16):g}: "
                                     f"{method}" + (", hysteresis (additions)" if hysteresis else ""))
        ax.axvline(goal, ls="--", color="gray", lw=1)
        ax.axhline(100 * TARGET["top1"], ls=":", color="gray", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("reduction in ops (original / Sigma-Delta additions)")
        ax.set_title(f"{clip} ({'static shot' if clip == 'bigbuckbunny' else 'moving camera'})")
    axes[0].set_ylabel("top-1 agreement with the original (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out_dir=OUT, quick: bool = False, image_models=IMAGE_MODELS, mnist: bool = True,
        progress: bool = True, init_k: float | None = None, runs=None) -> dict:
    """Run the experiment; write ``results.json``, ``results.md`` and ``finetune_tradeoff.png``.

    Parts not run this time (``mnist=False``, image models not named) are kept from an existing ``results.json``
    (read when writing), so the parts can run one at a time, or side by side in two processes.
    """
    cfg = dict(mnist_lams=MNIST_LAMS, test_frames=tuple(n for _, n in TEST_CLIPS)) | (QUICK if quick else {})
    if quick:
        cfg["mnist_test"] = 2000
    if runs:
        cfg["image_runs"] = tuple(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    torch.set_num_threads(1)
    done = dict(quick=quick, threads=1, torch=torch.__version__, target=TARGET, images=[])
    for m in image_models:  # each model's part is written as soon as it is done
        done["images"].append(image_part(m, cfg, progress, init_k))
        write(out_dir, done)
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
    key = lambda p: (p["model"], p.get("init_scale", 16.0))  # parts before init_scale was recorded: k = 16
    ran = {key(p) for p in done["images"]}
    images = [p for p in results.get("images", []) if key(p) not in ran] + done["images"]
    results.update({k: v for k, v in done.items() if k != "images"}, images=images)
    path.write_text(json.dumps(results, indent=1) + "\n")
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
                        "hysteresis scheme]), e.g. 1e-10:1e-10 or 1e-11:1e-10:1 (default: IMAGE_RUNS)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    runs = [tuple(float(v) for v in r.split(":")) for r in args.runs or ()]
    if any(len(r) not in (2, 3) for r in runs):
        parser.error("--runs: each run is CAL:LAM or CAL:LAM:H (H: hysteresis), e.g. 1e-10:1e-10")
    start = time.perf_counter()
    results = run(args.out, quick=args.quick, image_models=args.models, mnist=not args.no_mnist,
                  progress=not args.no_progress, init_k=args.init_scale, runs=runs)
    print(report(results))
    print(f"wrote {args.out} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
