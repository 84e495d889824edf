"""Speed of the simulation itself: the converted network in clip mode against a dense PyTorch pass of the same frames.

    .venv/bin/python benchmarks/simulation_speed.py [--model efficientnet-lite0] [--clip bigbuckbunny]
        [--frames 16] [--threads 2] [--repeats 7] [--scales scales.json]

Per repetition, in this order and on the same frames ``[T, 1, ...]`` (one clip-mode call of ``T`` steps, from a reset
state): the original model on the ``T`` frames as one batch under ``torch.inference_mode`` (the dense reference),
then the converted network as the Sigma-Delta network with its increments in float64 (the default), in float32
(``set_delta_dtype(torch.float32)``, what ``sigmadelta run`` and the video experiment use), the same without op
counting, and the Rounding network. Ratios are taken within
each repetition (the machine is shared and noisy) and the median over repetitions is printed, with the median
milliseconds per frame of each. One warm-up repetition is not counted. Prints one JSON object.

Scales: without ``--scales``, those ``sigmadelta run`` uses by default (the model's default λ, learned on carphone
from k = 16 with the paper's settings; read from the user cache once learned, else learned first, ~4 min).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import sigmadelta
from sigmadelta import data, models, recipes
from sigmadelta.files.scales import load_scales
from sigmadelta.learn.calibrate import calibrate


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(model_name: str, clip: str, frames: int, threads: int, repeats: int, scales: str | None) -> dict:
    torch.set_num_threads(threads)
    bundle = models.get(model_name, progress=False)
    clip_frames = data.load_clip(clip, bundle, max_frames=frames)  # (T, 1, 3, H, W)
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    if scales:
        net.set_scales(load_scales(scales, net))
    else:  # what `sigmadelta run` uses by default (read from the user cache once learned)
        net.set_scales({name: recipes.PAPER_VIDEO.init_scale for name in net.scales})
        calibrate(net, data.load_clip("carphone", bundle), recipes.scale_lam(model_name), model=model_name,
                  clip="carphone")
    batch = clip_frames[:, 0]  # (T, 3, H, W): the dense pass sees the frames as one batch

    def run(mode: str, delta_dtype: torch.dtype, counting: bool = True):
        def go():
            net.set_mode(mode).set_delta_dtype(delta_dtype)  # both reset: every run starts a stream
            net.counting = counting
            net.run(clip_frames)
        return go

    variants = {
        "sigma_delta_float64_increments": run("sigma-delta", torch.float64),
        "sigma_delta_float32_increments": run("sigma-delta", net.dtype),
        "sigma_delta_float32_increments_no_counting": run("sigma-delta", net.dtype, counting=False),
        "rounding": run("rounding", net.dtype),
    }
    times: dict[str, list[float]] = {"dense": [], **{k: [] for k in variants}}
    with torch.inference_mode():
        for i in range(repeats + 1):
            row = {"dense": seconds(lambda: bundle.model(batch))}
            row |= {name: seconds(fn) for name, fn in variants.items()}
            if i:  # the first repetition warms up
                for name, t in row.items():
                    times[name].append(t)
    ms = {name: 1e3 * statistics.median(ts) / frames for name, ts in times.items()}
    ratio = {name: statistics.median(t / d for t, d in zip(ts, times["dense"]))
             for name, ts in times.items() if name != "dense"}
    return dict(model=model_name, clip=clip, frames=frames, threads=threads, repeats=repeats,
                torch=torch.__version__, ms_per_frame=ms, ratio_to_dense=ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--clip", default="bigbuckbunny", help="a bundled clip or a video file")
    parser.add_argument("--frames", type=int, default=16, help="steps of the one clip-mode call")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--scales", help="a scales file (sigmadelta optimize -o)")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.clip, args.frames, args.threads, args.repeats, args.scales), indent=1))


if __name__ == "__main__":
    main()
