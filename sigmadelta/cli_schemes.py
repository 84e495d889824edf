"""The delta-scheme options of the ``sigmadelta`` commands: ``--scheme``, ``--scheme-param`` and
``optimize --learn-scheme-param``, turned into calls of the package (heavy modules load inside the functions)."""

from __future__ import annotations

__all__ = ["SCHEME_NAMES", "apply_scheme", "check_allocate_bands", "learn_scheme_param", "finetune_scheme_settings"]

SCHEME_NAMES = ("sigma-delta", "hysteresis", "threshold")  # sigmadelta.functional.SCHEMES (not imported to parse)


def apply_scheme(args, bundle, net, calibration=None) -> dict:
    """Set ``--scheme`` (with ``--scheme-param`` or the model's default) in ``net``; returns what was set. The
    threshold scheme measures σ on ``calibration`` frames ``[T, B, ...]``, else on the calibration clip."""
    if args.scheme is None:  # --allocate-bands without a scheme: refused by check_allocate_bands before any work
        return {"name": net.scheme, "params": net.scheme_params}
    from sigmadelta import data
    from sigmadelta.scales import default_scheme_param

    param = default_scheme_param(args.model, args.scheme) if args.scheme_param is None else args.scheme_param
    if not param >= 0:
        raise ValueError(f"--scheme-param must be >= 0, got {param}")
    allocate = getattr(args, "allocate_bands", False)
    clip = "the given frames" if calibration is not None else (getattr(args, "calibrate", None) or "carphone")
    if calibration is None and (args.scheme == "threshold" or allocate):
        calibration = data.load_clip(clip, bundle, max_frames=args.calibrate_frames)
    if args.scheme == "threshold":
        net.set_scheme("threshold", tau=param, calibration=calibration)
        print(f"scheme: threshold, θ = {param:g}·σ of each layer's input on {clip}")
    else:
        net.set_scheme(args.scheme, h=param)
        print(f"scheme: {args.scheme}" + (f", h = {param:g}" if args.scheme == "hysteresis" else ""))
    setting = {"name": args.scheme, "param": param}
    if allocate:
        from sigmadelta import allocate_bands

        allocation = allocate_bands(net, calibration)
        bands = [b / before for b, before in zip(allocation.bands.values(), allocation.before.values())]
        print(f"  bands spread by output sensitivity on {clip} (sigmadelta.allocate_bands), same predicted error: "
              f"{min(bands):.2g}x .. {max(bands):.2g}x the uniform ones")
        setting["allocated_bands"] = allocation.bands
    return {**setting, "params": net.scheme_params}


def check_allocate_bands(args) -> None:
    """``--allocate-bands`` spreads the band of a scheme that has one: refused with any other ``--scheme``."""
    if getattr(args, "allocate_bands", False) and args.scheme not in ("hysteresis", "threshold"):
        raise ValueError("--allocate-bands spreads the band of --scheme hysteresis or threshold; give one of them")


# `optimize --learn-scheme-param`: the frames searched on and the values tried (h in levels; θ as multiples of the θ
# set, τ·σ of each layer's input), as experiments/oconnor2017/learned_h.py measured them
SEARCH_FRAMES, SEARCH_VALUES = 40, (0.5, 1.0, 2.0, 3.0, 4.0)


def learn_scheme_param(args, bundle, net) -> dict:
    """Learn the scheme's parameter per quantizer (:func:`sigmadelta.learn_scheme_params`) on the first frames of
    the calibration clip at trade-off ``--learn-scheme-param`` per event, from the parameter set; returns a record."""
    from sigmadelta import data, learn_scheme_params

    clip = args.calibrate or "carphone"
    frames = data.load_clip(clip, bundle, max_frames=min(SEARCH_FRAMES, args.calibrate_frames or SEARCH_FRAMES))
    start = net.scheme_params
    unit = {name: 1.0 if args.scheme == "hysteresis" else theta for name, theta in start.items()}
    print(f"learning {args.scheme}'s parameter per quantizer on {clip} ({len(frames)} frames), λ = "
          f"{args.learn_scheme_param:g} per event")
    search = learn_scheme_params(net, frames, args.learn_scheme_param, scheme=args.scheme, start=start,
                                 candidates={name: [v * u for v in SEARCH_VALUES] for name, u in unit.items()})
    values = sorted(search.params.values())
    print(f"  {len(values)} quantizers, {'h' if args.scheme == 'hysteresis' else 'θ'} {values[0]:.3g} .. "
          f"{values[-1]:.3g}; on those frames error {search.error:.3g}, {search.ops:.4g} event ops per frame")
    return dict(lam=args.learn_scheme_param, clip=str(clip), frames=len(frames), error=search.error,
                event_ops_per_frame=search.ops, values=list(SEARCH_VALUES))


def finetune_scheme_settings(args) -> dict:
    """``--scheme`` / ``--scheme-param`` of `finetune` as FinetuneConfig settings (none given: the model's)."""
    if args.scheme is None:
        if args.scheme_param is not None:
            raise ValueError("--scheme-param is h of --scheme hysteresis; give --scheme hysteresis with it")
        return {}
    if args.scheme == "sigma-delta":
        if args.scheme_param is not None:
            raise ValueError("--scheme-param is h of --scheme hysteresis; the sigma-delta scheme has none")
        return {"scheme": "rounding"}
    from sigmadelta.scales import default_scheme_param

    h = default_scheme_param(args.model, "hysteresis") if args.scheme_param is None else args.scheme_param
    return {"scheme": "hysteresis", "hysteresis": h, "allocate_bands": args.allocate_bands}
