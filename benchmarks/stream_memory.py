"""Memory of long streams with op counting on: the process's resident set (RSS) while frames go in one at a time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stream_memory.py [--mlp-steps 100000] [--cnn-frames 2000]
        [--per-step none|total|layer] [--threads 1] [--out benchmarks/results/stream_memory.json]

Two streams, each through ``net(frame)`` (streaming, one step per call), sigma-delta mode, op counting on (the
default), ``net.per_step_counts`` as given (``none``: the default, running totals only):

- the package's pre-trained 784-200-200-10 MNIST MLP on the Temporal-MNIST test split, looped (10,000 digits,
  then again from the first: one stream, never reset), all scales k = 8;
- EfficientNet-Lite0 (ImageNet weights) on the bundled ``carphone`` clip played forward and backward (120
  frames preprocessed once, before the baseline), all scales k = 16.

RSS is read from ``/proc/self/statm`` every ``--samples``-th of the stream. Growth is the RSS at the end minus the
RSS after warm-up (the first 10% of the stream: allocator pools, fan-out plans, the first calls' buffers); the
least-squares trend over the samples after warm-up is given too. The JSON lists the samples, the growth in MB and
per step, and the op counts at the end (so the stream really was counted). The target: growth below 5 MB after
warm-up.

glibc's malloc returns large blocks to the system and takes them back as its dynamic mmap threshold moves, so
with the default allocator the CNN's RSS wanders by tens of MB from frame to frame without growing. Run with
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=8589934592`` (recorded in the JSON) to pin the threshold
and keep freed memory: RSS then rises to the working set and stays there, and any growth is real.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path

import torch

import sigmadelta
from sigmadelta import data, models

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def stream(net, frames, steps: int, samples: int) -> dict:
    """Feed ``steps`` frames, cycling through ``frames`` ``[N, 1, ...]`` forward and backward, one per call."""
    n = len(frames)
    order = list(range(n)) + list(range(n - 2, 0, -1)) if n > 2 else list(range(n))
    every = max(1, steps // samples)
    warm = max(1, steps // 10)
    trace, start = [], time.perf_counter()
    with torch.inference_mode():
        for t in range(steps):
            net(frames[order[t % len(order)]])
            if t + 1 == warm or (t + 1) % every == 0 or t + 1 == steps:
                gc.collect()
                trace.append({"step": t + 1, "rss_mb": round(rss_mb(), 2),
                              "seconds": round(time.perf_counter() - start, 1)})
    after_warm = next(s["rss_mb"] for s in trace if s["step"] == warm)
    counts = net.op_counts()
    growth = trace[-1]["rss_mb"] - after_warm
    late = [s for s in trace if s["step"] >= warm]
    mean_t, mean_r = (sum(s[k] for s in late) / len(late) for k in ("step", "rss_mb"))
    slope = (sum((s["step"] - mean_t) * (s["rss_mb"] - mean_r) for s in late)
             / max(sum((s["step"] - mean_t) ** 2 for s in late), 1e-9))  # least squares, MB per step
    return {"steps": steps, "warm_up_steps": warm, "rss_after_warm_up_mb": after_warm,
            "rss_end_mb": trace[-1]["rss_mb"],
            "growth_after_warm_up_mb": round(growth, 2),
            "growth_per_step_kb": round(1024 * growth / max(steps - warm, 1), 4),
            "rss_max_after_warm_up_mb": max(s["rss_mb"] for s in late),
            "fitted_trend_after_warm_up_mb": round(slope * (steps - warm), 2),
            "counted_steps": counts.steps, "sigma_delta_ops_per_step": counts.per_sample("sigma_delta"),
            "dense_ops_per_step": counts.per_sample("dense"), "ms_per_step": 1e3 * trace[-1]["seconds"] / steps,
            "trace": trace}


def mlp_run(steps: int, per_step, samples: int) -> dict:
    bundle = models.get("mnist-mlp")
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    net.set_scales({name: 8.0 for name in net.scales})
    net.set_mode("sigma-delta")
    net.per_step_counts = per_step
    digits, _ = data.mnist_clip("test", temporal=True)  # (10000, 1, 784)
    return {"model": "mnist-mlp", "stream": "temporal-mnist test, looped"} | stream(net, digits, steps, samples)


def cnn_run(frames: int, per_step, samples: int) -> dict:
    bundle = models.get("efficientnet-lite0")
    net = sigmadelta.convert(bundle.model, bundle.example_input())
    net.set_scales({name: 16.0 for name in net.scales})
    net.set_delta_dtype(torch.float32)  # as `sigmadelta run` does by default
    net.set_mode("sigma-delta")
    net.per_step_counts = per_step
    clip = data.load_clip("carphone", bundle)  # (120, 1, 3, 224, 224)
    return {"model": "efficientnet-lite0", "stream": "carphone, forward and backward"} | stream(
        net, clip, frames, samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mlp-steps", type=int, default=100_000)
    parser.add_argument("--cnn-frames", type=int, default=2_000)
    parser.add_argument("--per-step", choices=("none", "total", "layer"), default="none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=20, help="RSS samples per stream")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stream_memory.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_step = None if args.per_step == "none" else args.per_step
    result = {"per_step_counts": per_step, "threads": args.threads, "torch": torch.__version__,
              "sigmadelta_from": str(Path(sigmadelta.__file__).parent),
              "machine": platform.processor() or platform.machine(), "target_growth_mb": 5.0,
              "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}, "runs": []}
    for run, length in ((mlp_run, args.mlp_steps), (cnn_run, args.cnn_frames)):
        if length > 0:
            result["runs"].append(run(length, per_step, args.samples))
            r = result["runs"][-1]
            print(f"{r['model']}: {r['steps']} steps, RSS {r['rss_after_warm_up_mb']:.1f} -> {r['rss_end_mb']:.1f} MB "
                  f"after warm-up ({r['growth_after_warm_up_mb']:+.2f} MB, {r['ms_per_step']:.2f} ms/step)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1) + "\n")  # after each run: a checkpoint
    result["met"] = all(r["growth_after_warm_up_mb"] < 5.0 for r in result["runs"])
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
