"""One fine-tuning variant of SqueezeNet (or another image model) on the fine-tuning experiment's protocol, for
settings `reproduce finetune` does not sweep: more steps, per-channel scales, another config field.

    python -m sigmadelta.paper.finetune_variant MODEL CAL_LAM FT_LAM [FIELD=VALUE ...] [--per-channel]

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
from sigmadelta import SchemeConfig, configure_scheme, data, models, recipes
from sigmadelta.learn.calibrate import calibrate
from sigmadelta.learn.finetune import ALLOCATION_FRAMES, finetune_cached, training_clips
from sigmadelta.paper._common import evaluate_segments, write_result
from sigmadelta.paper.finetune import CALIBRATION, TEST_CLIPS
from sigmadelta.paper.imagenet_video import load_stream

TEXT_FIELDS = ("scheme", "error", "surrogate", "lr_decay")
BOOL_FIELDS = ("allocate_bands", "train_biases")  # given as true / false
SCHEME_FIELDS = {"scheme": "name", "h": "param", "allocate_bands": "allocate_bands"}  # of the SchemeConfig


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    per_channel = "--per-channel" in argv
    argv = [a for a in argv if a != "--per-channel"]
    model, cal_lam, lam, fields = argv[0], float(argv[1]), float(argv[2]), argv[3:]
    changes, scheme = {}, {}
    for pair in fields:
        key, value = pair.split("=")
        if key in BOOL_FIELDS:
            value = {"true": True, "false": False}[value.lower()]
        elif key not in TEXT_FIELDS:
            value = int(value) if value.isdigit() and key != "h" else float(value)
        if key in SCHEME_FIELDS:
            scheme[SCHEME_FIELDS[key]] = value
        else:
            changes[key] = value
    if scheme:
        changes["scheme"] = SchemeConfig(**scheme)
    bundle = models.get(model, progress=False)
    original = sigmadelta.convert(bundle.model, bundle.example_input())
    stream, segments = load_stream(bundle, TEST_CLIPS)
    clips, names = training_clips(bundle)
    net = copy.deepcopy(original)
    calibrate(net, data.load_clip("carphone", bundle), cal_lam, model=model, clip="carphone", progress=False,
              init_scale=recipes.scale_config(model).init_scale, **CALIBRATION)
    if per_channel:
        tuned = sigmadelta.convert(bundle.model, bundle.example_input(), per_channel_scales=True)
        tuned.set_scales({q: float(k) for q, k in net.scales.items()})
        net = tuned
    config = recipes.finetune_config(model).replace(**changes)
    if config.scheme.name == "hysteresis":  # "before" is this net: finetune sets the scheme the same way (same frames)
        configure_scheme(net, config.scheme, clips[0][:ALLOCATION_FRAMES])
    out = dict(model=model, cal_lam=cal_lam, lam=lam, per_channel=per_channel, config=config.to_dict(),
               before=evaluate_segments(net, original, stream, segments))
    start = time.perf_counter()
    run = finetune_cached(net, clips, lam, config, model=model, meta={"train": names}, progress=False)
    out.update(train_seconds=time.perf_counter() - start, checkpoint=str(run.path),
               after=evaluate_segments(net, original, stream, segments))
    for when in ("before", "after"):
        print(when, "(additions, events, top-1, top-5, dense top-1)",
              {clip: (round(r["reduction"], 2), round(r["reduction_events"], 2), r["top1_agreement"],
                      r["top5_agreement"], r["dense_top1_agreement"]) for clip, r in out[when].items()})
    tag = "-".join([model, f"{cal_lam:g}", f"{lam:g}", *fields] + (["per-channel"] if per_channel else []))
    write_result(f"finetune/variants/{tag}.json", out)


if __name__ == "__main__":
    main(sys.argv[1:])
