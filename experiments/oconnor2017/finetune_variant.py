"""One fine-tuning variant of SqueezeNet (or another image model) on the fine-tuning experiment's protocol, for
settings `reproduce finetune` does not sweep: more steps, per-channel scales, another config field.

    .venv/bin/python experiments/oconnor2017/finetune_variant.py MODEL CAL_LAM FT_LAM [FIELD=VALUE ...] [--per-channel]

Scales calibrated on carphone at CAL_LAM (cached), fine-tuned at FT_LAM with the model's default config changed by
the FIELD=VALUE pairs (``steps=1440``, ``scheme=hysteresis``, ``allocate_bands=true``, ...), evaluated on the test stream bigbuckbunny 100 +
bikes 100 before and after. ``--per-channel``: the net converted with per-channel scales, each channel's k starting
from its layer's calibrated one. Writes ``results/finetune/variants/<model>-<cal>-<lam>-<fields>.json``.
"""

import copy
import sys
import time

import torch

import sigmadelta
from sigmadelta import allocate_bands, data, models
from sigmadelta.finetune import ALLOCATION_FRAMES, default_config, finetune_cached, training_clips
from sigmadelta.paper.finetune import CALIBRATION, TEST_CLIPS, stream_eval
from sigmadelta.paper.imagenet_video import load_stream
from sigmadelta.scales import calibrate, init_scale

from _common import write_result  # this folder's module (the script's folder is on sys.path)

TEXT_FIELDS = ("scheme", "error", "cost", "lr_decay")
BOOL_FIELDS = ("allocate_bands", "train_biases")  # given as true / false


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    per_channel = "--per-channel" in argv
    argv = [a for a in argv if a != "--per-channel"]
    model, cal_lam, lam, fields = argv[0], float(argv[1]), float(argv[2]), argv[3:]
    changes = {}
    for pair in fields:
        key, value = pair.split("=")
        if key in BOOL_FIELDS:
            changes[key] = {"true": True, "false": False}[value.lower()]
        else:
            changes[key] = value if key in TEXT_FIELDS else (int(value) if value.isdigit() else float(value))
    bundle = models.get(model, progress=False)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    stream, segments = load_stream(bundle, TEST_CLIPS)
    clips, names = training_clips(model, bundle)
    net = copy.deepcopy(original)
    calibrate(net, data.load_clip("carphone", bundle), cal_lam, model=model, clip="carphone", progress=False,
              init_scale=init_scale(model), **CALIBRATION)
    if per_channel:
        tuned = sigmadelta.convert(bundle.model, bundle.example_input(), per_channel_scales=True)
        tuned.set_scales({q: float(k) for q, k in net.scales.items()})
        net = tuned
    config = default_config(model).replace(**changes)
    if config.scheme == "hysteresis":
        net.set_scheme("hysteresis", h=config.hysteresis)
    if config.allocate_bands:  # "before" is the allocated net: finetune spreads h the same way (same frames)
        allocate_bands(net, clips[0][:ALLOCATION_FRAMES])
    out = dict(model=model, cal_lam=cal_lam, lam=lam, per_channel=per_channel, config=config.to_dict(),
               before=stream_eval(net, original, stream, segments))
    start = time.perf_counter()
    run = finetune_cached(net, clips, lam, config, model=model, meta={"train": names}, progress=False)
    out.update(train_seconds=time.perf_counter() - start, checkpoint=str(run.path),
               after=stream_eval(net, original, stream, segments))
    for when in ("before", "after"):
        print(when, "(additions, events, top-1, top-5, dense top-1)",
              {clip: (round(r["reduction"], 2), round(r["reduction_events"], 2), r["top1_agreement"],
                      r["top5_agreement"], r["dense_top1_agreement"]) for clip, r in out[when].items()})
    tag = "-".join([model, f"{cal_lam:g}", f"{lam:g}", *fields] + (["per-channel"] if per_channel else []))
    write_result(f"finetune/variants/{tag}.json", out)


if __name__ == "__main__":
    main(sys.argv[1:])
