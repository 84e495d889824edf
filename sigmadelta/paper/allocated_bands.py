"""Bands spread across layers by output sensitivity (:func:`sigmadelta.allocate_bands`) against the uniform ones,
thresholds and hysteresis, on the schemes experiment's clips.

    python -m sigmadelta.paper.allocated_bands MODEL [--taus T ...] [--hs H ...] [--scales-lam L]
        [--exponents E ...]

σ (for θ = τ·σ) and the bands' statistics are measured on the training clip carphone; hysteresis runs on scales
learned there at SCALES_LAM (the paper's recipe, cached). Every setting runs the test stream bigbuckbunny 100 +
bikes 100 (never trained on) with uniform bands and with the bands allocated at the same predicted error. For each
clip the setting with the most events saved at ≥ 90% top-1 and ≥ 98% top-5 agreement is compared with the uniform
thresholds' best there (the peers' tuned baseline). ``--exponents``: the allocation rule's exponents to try (default
the rule's 1/3; ``b ∝ (f a / g)^E``). Writes ``results/schemes/allocated/<model>.json`` (with other exponents,
``<model>-exponents-<E>-....json``).
"""

import argparse
import json
import time

import sigmadelta
from sigmadelta import recipes
from sigmadelta.learn.calibrate import calibrate
from sigmadelta.paper._common import evaluate_segments, setup, write_result
from sigmadelta.paper.finetune import CALIBRATION, TEST_CLIPS
from sigmadelta.paper.imagenet_video import load_stream

AGREEMENT = dict(top1=0.90, top5=0.98)


def row(label, scheme, param, allocated, result, seconds):
    return dict(label=label, scheme=scheme, param=param, allocated=allocated, seconds=round(seconds, 1),
                **{clip: dict(events=round(r["reduction_events"], 3), additions=round(r["reduction"], 3),
                              top1=r["top1_agreement"], top5=r["top5_agreement"]) for clip, r in result.items()})


def best(rows, clip, keep):
    ok = [r for r in rows if keep(r) and r[clip]["top1"] >= AGREEMENT["top1"] and r[clip]["top5"] >= AGREEMENT["top5"]]
    return max(ok, key=lambda r: r[clip]["events"]) if ok else None


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--taus", type=float, nargs="+", default=(0.02, 0.03, 0.05, 0.07, 0.1))
    p.add_argument("--hs", type=float, nargs="+", default=(0.5, 1.0, 2.0))
    p.add_argument("--scales-lam", type=float, default=1e-11)
    p.add_argument("--exponents", type=float, nargs="+", default=(1 / 3,))
    args = p.parse_args(argv)
    default_exponent = list(args.exponents) == [1 / 3]
    bundle, original, net, train = setup(args.model)
    stream, segments = load_stream(bundle, TEST_CLIPS)
    calibrate(net, train, args.scales_lam, model=args.model, clip="carphone", progress=False,
              init_scale=recipes.scale_config(args.model).init_scale, **CALIBRATION)
    settings = [("threshold", tau, dict(tau=tau, calibration=train)) for tau in args.taus]
    settings += [("hysteresis", h, dict(h=h)) for h in args.hs]
    rows, allocations = [], {}
    for scheme, param, kwargs in settings:
        for exponent in (None, *args.exponents):  # None: the uniform bands
            started = time.perf_counter()
            net.set_scheme(scheme, **kwargs)
            label = f"{scheme} {'τ' if scheme == 'threshold' else 'h'}={param:g}"
            if exponent is not None:
                label += " allocated" + ("" if default_exponent else f" e={exponent:.3g}")
                allocations[label] = sigmadelta.allocate_bands(net, train, exponent=exponent).to_dict()
            rows.append(row(label, scheme, param, exponent is not None, evaluate_segments(net, original, stream, segments),
                            time.perf_counter() - started))
            rows[-1]["exponent"] = exponent
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "seconds"}), flush=True)
    comparison = {}
    for clip, _ in TEST_CLIPS:
        baseline = best(rows, clip, lambda r: r["scheme"] == "threshold" and not r["allocated"])
        ours = best(rows, clip, lambda r: r["allocated"])
        comparison[clip] = dict(baseline=baseline and baseline["label"], ours=ours and ours["label"],
                                ratio=(ours[clip]["events"] / baseline[clip]["events"]) if baseline and ours else None)
        if not default_exponent:  # the best setting of each exponent
            comparison[clip]["by_exponent"] = {
                f"{e:.3g}": r and dict(label=r["label"], events=r[clip]["events"], top1=r[clip]["top1"])
                for e in args.exponents for r in [best(rows, clip, lambda r, e=e: r["exponent"] == e)]}
        print(clip, comparison[clip])
    out = dict(model=args.model, scales_lam=args.scales_lam, exponents=list(args.exponents), agreement=AGREEMENT,
               rows=rows, comparison=comparison, allocations=allocations)
    name = args.model + ("" if default_exponent else "-exponents-" + "-".join(f"{e:.3g}" for e in args.exponents))
    write_result(f"schemes/allocated/{name}.json", out)


if __name__ == "__main__":
    main()
