"""The ``sigmadelta`` command: a thin argparse layer over the package's public functions.

    sigmadelta demo [--frames N] [--lam L] [--synthetic] [--json FILE]
    sigmadelta data [--json FILE]
    sigmadelta run VIDEO --model NAME [--weights FILE] [--scales FILE | --calibrate CLIP | --checkpoint FILE]
                   [--lam L] [--frames N] [--json FILE] [--plot FILE] [--strict]
    sigmadelta optimize --model NAME --calibrate CLIP [--lam L] [--scheme S [--learn-scheme-param LAM]] -o scales.json
    sigmadelta finetune --model NAME [--lam L] [--scheme S [--scheme-param H] [--allocate-bands]] [--cost C]
                        [--train CLIP ...] [--steps N] [-o FILE]
    sigmadelta reproduce {random-net,mnist,video,schemes,finetune} [--out DIR] [--quick] [--model NAME (video)]
    sigmadelta bench --model NAME --data CLIP_OR_DATASET [--checkpoint FILE] [--frames N] [--threads N] [--json FILE]
    sigmadelta --help

Errors of the user's making (a missing or bad file, a bad argument, an output path that cannot be written) print
one line and exit with code 2, before any work where they can be seen before; Ctrl-C exits with 130. Every output
path is checked before anything runs, and a command's files are written together at the end (temporary files,
then renames), so a failure or an interrupt leaves none of them half-written or written alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sigmadelta import cli_commands as commands
from sigmadelta.cli_checks import check_outputs, lam_value, positive_float, positive_int
from sigmadelta.errors import SigmaDeltaError
from sigmadelta.paper import EXPERIMENTS  # the names only: the experiments load on demand

__all__ = ["main"]


def _model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by `run`, `optimize` and `finetune`: the model, and how its scales are learned."""
    p.add_argument("--model", help="a model name (efficientnet-lite0, vgg19, ...); required but with --checkpoint")
    p.add_argument("--weights", metavar="FILE", help="a state_dict file (required for vgg19)")
    p.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ when learning scales (default: the "
                   "model's, from the trade-off curve; 1e-11 as in the paper for vgg19)")
    p.add_argument("--calibrate-frames", type=positive_int, metavar="N",
                   help="learn on the first N frames of the clip only")
    p.add_argument("--epochs", type=positive_int, default=5,
                   help="epochs when learning scales (default 5, as in the paper)")
    p.add_argument("--lr", type=positive_float, default=0.1,
                   help="SGD learning rate on log-scales (default 0.1, as in the paper)")
    p.add_argument("--calibrate-batch", type=positive_int, default=1, metavar="N",
                   help="frames per minibatch when learning scales (default 1, as in the paper; under torchrun each "
                   "minibatch is split over the processes)")


def _scheme_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheme", choices=commands.SCHEME_NAMES, help="delta scheme: the paper's sigma-delta (default, or the "
                   "scales file's), hysteresis (a level moves only past 0.5 + h), threshold (the peers' thresholded "
                   "deltas, θ = τ·σ of each layer's input)")
    p.add_argument("--scheme-param", type=float, metavar="P", help="h for hysteresis, τ for threshold (default: "
                   "the model's, from `sigmadelta reproduce schemes`, with the λ it was read at unless --lam)")
    p.add_argument("--allocate-bands", action="store_true", help="then spread the scheme's band across layers by "
                   "output sensitivity at the same predicted error, measured on the calibration clip "
                   "(sigmadelta.allocate_bands; hysteresis or threshold)")


def _add_bench(sub) -> None:
    """The `bench` command's options."""
    bench = sub.add_parser("bench", help="wall-clock of the sparse sigma-delta backend against the dense original")
    bench.add_argument("--model", help="mnist-mlp, mnist-mlp-wide, squeezenet1_1, efficientnet-lite0, vgg19 "
                       "(`sigmadelta data` lists them; or --checkpoint)")
    bench.add_argument("--data", required=True, metavar="CLIP_OR_DATASET",
                       help="temporal-mnist or mnist (test split) for the MLPs; a bundled clip or a video file")
    bench.add_argument("--frames", type=positive_int, default=200, metavar="N", help="frames to time (default 200)")
    bench.add_argument("--threads", type=positive_int, default=1, metavar="N",
                       help="torch threads, both sides (default 1)")
    bench.add_argument("--repeats", type=positive_int, default=5, help="timed passes per side; the median is kept")
    bench.add_argument("--weights", metavar="FILE", help="a state_dict file (required for vgg19)")
    bench.add_argument("--scales", metavar="FILE", help="scales saved by `sigmadelta optimize` (default: learned "
                                                        "as the demo does for MLPs, cached calibration for images)")
    bench.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ when learning scales")
    bench.add_argument("--checkpoint", metavar="FILE", help="weights and scales from `sigmadelta finetune`")
    bench.add_argument("--json", metavar="FILE", help="write the result as JSON")
    _scheme_args(bench)
    bench.set_defaults(func=commands.bench_command, calibrate_frames=None, epochs=5, lr=0.1,
                       calibrate_batch=1)


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="a pre-trained image model on any video, as the original and the Sigma-Delta "
                                     "network: ops per frame, reduction, top-1/top-5 agreement")
    run.add_argument("video", help="a video file (mp4, avi, ...)")
    _model_args(run)
    which = run.add_mutually_exclusive_group()
    which.add_argument("--scales", metavar="FILE", help="scales saved by `sigmadelta optimize`")
    which.add_argument("--calibrate", metavar="CLIP", help="learn the scales on this bundled clip or video file "
                                                           "(default: carphone; cached)")
    which.add_argument("--checkpoint", metavar="FILE", help="weights and scales from `sigmadelta finetune` "
                                                            "(names its model: --model may be left out)")
    run.add_argument("--frames", type=positive_int, metavar="N", help="only the first N frames")
    run.add_argument("--chunk", type=positive_int, default=16, metavar="N",
                     help="frames per clip-mode call (default 16)")
    run.add_argument("--exact", action="store_true", help="compute the increments in float64 (closest to exact "
                                                          "arithmetic, 2-3x slower on CNNs) instead of float32")
    run.add_argument("--json", metavar="FILE", help="write per-frame results and the summary as JSON")
    run.add_argument("--plot", metavar="FILE", help="write a per-frame figure (PNG, or PDF, SVG, ... by its suffix)")
    run.add_argument("--strict", action="store_true", help="refuse a truncated or partly corrupt video (default: "
                                                           "warn, and use its decodable frames)")
    _scheme_args(run)
    run.set_defaults(func=commands.run_command)


def _add_finetune(sub) -> None:
    tune = sub.add_parser("finetune", help="train a model's weights and scales for the Sigma-Delta cost "
                                           "(distilled from the original) and write a checkpoint")
    _model_args(tune)
    tune.add_argument("--train", nargs="+", metavar="CLIP", help="training clips: bundled clip names, video files, "
                                                                 "'synthetic' (default: the model's; see README)")
    tune.add_argument("--scales", metavar="FILE", help="start from these scales (default: calibrated, cached)")
    tune.add_argument("--steps", type=positive_int, metavar="N", help="optimizer steps (default: the model's)")
    tune.add_argument("--batch", type=positive_int, metavar="N", help="windows per step, over all processes")
    tune.add_argument("--window", type=positive_int, metavar="T", help="consecutive frames per window")
    tune.add_argument("--scheme", choices=("sigma-delta", "hysteresis"), help="the delta scheme trained for: the "
                      "paper's sigma-delta (as its Rounding network) or hysteresis (default: the model's)")
    tune.add_argument("--scheme-param", type=float, metavar="H", help="h of --scheme hysteresis (default: the "
                      "model's, with the λ of its starting scales unless --scales)")
    tune.add_argument("--allocate-bands", action="store_true", help="with --scheme hysteresis: first spread h across "
                      "layers by output sensitivity on the first training clip (sigmadelta.allocate_bands)")
    tune.add_argument("--cost", choices=("scaled", "rounded", "events"), help="the cost surrogate penalised: the "
                      "additions (scaled, the default) or the events (one message per unit moved)")
    tune.add_argument("--seed", type=int, help="seed of the window sampler")
    tune.add_argument("--threads", type=positive_int, metavar="N", help="torch threads per process")
    tune.add_argument("-o", "--output", metavar="FILE", help="the checkpoint to write (default: cached by content "
                                                             "in the user cache)")
    tune.set_defaults(func=commands.finetune_command, calibrate=None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sigmadelta",
        description="Sigma-Delta quantized networks: convert a PyTorch model so that its work follows how much "
                    "its input changes, and count what it costs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the pre-trained MNIST MLP on Temporal-MNIST as the four networks: "
                                       "per-layer table of ops, energy and error")
    demo.add_argument("--frames", type=positive_int, default=10_000,
                      help="Temporal-MNIST test frames (default: all 10,000)")
    demo.add_argument("--lam", type=lam_value, metavar="L", help="trade-off λ for the scales (default: the MLP's, 1e-8)")
    demo.add_argument("--calibrate", type=positive_int, default=10_000, metavar="N",
                      help="training images to learn the scales on (default 10,000)")
    demo.add_argument("--synthetic", action="store_true",
                      help="a random MLP on a synthetic stream instead (no data needed)")
    demo.add_argument("--seed", type=int, default=0, help="seed for --synthetic")
    demo.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    demo.set_defaults(func=commands.demo_command)

    data = sub.add_parser("data", help="list every dataset, clip and model, where it comes from, whether present")
    data.add_argument("--json", metavar="FILE", help="also write the list as JSON")
    data.set_defaults(func=commands.data_command)

    _add_run(sub)

    optimize = sub.add_parser("optimize", help="learn a model's scales on a clip (the paper's protocol) and save them")
    _model_args(optimize)
    optimize.add_argument("--calibrate", metavar="CLIP", required=True, help="a bundled clip name or a video file")
    optimize.add_argument("-o", "--output", metavar="FILE", required=True, help="the scales file to write (JSON)")
    optimize.add_argument("--per-channel-scales", action="store_true", help="one scale per input channel instead "
                          "of the paper's one per layer (run, bench and finetune read such files)")
    _scheme_args(optimize)
    optimize.add_argument("--learn-scheme-param", type=lam_value, metavar="LAM", help="then learn the scheme's "
                          "parameter per quantizer on the clip's first 40 frames, at trade-off LAM per event op: h "
                          "from 0.5 to 4, θ from 0.5 to 4 times the one set (sigmadelta.learn_scheme_params)")
    optimize.set_defaults(func=commands.optimize_command)

    _add_finetune(sub)
    _add_bench(sub)

    reproduce = sub.add_parser("reproduce", help="reproduce a figure of the paper: figures, tables, results.json")
    reproduce.add_argument("experiment", choices=sorted(EXPERIMENTS))
    reproduce.add_argument("--out", type=Path, help="output folder (default: the experiment's results folder)")
    reproduce.add_argument("--quick", action="store_true", help="fewer samples and settings, for a first look")
    reproduce.add_argument("--model", help="video only: an image model (default efficientnet-lite0; squeezenet1_1)")
    reproduce.set_defaults(func=commands.reproduce_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse printed the bad argument: return its code 2 (--help: exit as usual)
        if e.code == 2:
            return 2
        raise
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        check_outputs(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"\nsigmadelta {args.command}: interrupted; no output written", file=sys.stderr)
        return 130
    except (SigmaDeltaError, OSError, KeyError, ValueError) as e:  # the user's files and arguments
        message = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() adds quotes
        print(f"sigmadelta {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
