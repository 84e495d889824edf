"""The network a command runs: decided from its arguments before any work (:func:`plan_net`: every name, file and
combination checked, nothing heavy loaded), then built (:func:`build_net`: the model, its conversion, its scales and
its delta scheme). Commands pass these explicit values on; the parsed arguments are never rewritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ScaleConfig, SchemeConfig
from ..errors import CheckpointError, ConfigError, MissingFileError, UsageError

__all__ = ["Scales", "NetPlan", "Built", "plan_net", "build_net", "check_clip", "check_file", "scale_learning",
           "learn_mnist_scales"]

MNIST_IMAGES = 10_000  # training images the MNIST MLPs learn their scales on (as the demo does)
SCHEME_FRAMES_MNIST = 1_000  # training images an MLP measures θ and bands on


@dataclass(frozen=True)
class Scales:
    """Where a network's scales come from: ``"file"`` (``path``), ``"checkpoint"`` (``path``), ``"shipped"`` (the
    package's file at ``path``), or ``"learn"`` (on ``clip``, or MNIST's training images, with ``config``)."""

    source: str
    path: Path | None = None
    clip: str | None = None
    config: ScaleConfig | None = None
    max_frames: int | None = None


@dataclass(frozen=True)
class NetPlan:
    """Everything :func:`build_net` needs, checked."""

    model: str
    kind: str  # "image" or "mnist" (sigmadelta.models.kind)
    weights: str | None
    per_channel: bool
    scales: Scales
    scheme: SchemeConfig | None  # None: the scales file's or checkpoint's, else the paper's
    scheme_clip: str | None = None  # where θ and bands are measured (image models)
    float64: bool = False  # the model converted in float64 (run --exact)


@dataclass
class Built:
    """A built network: the bundle, the converted net, the unmodified converted original where the net's weights
    were fine-tuned (else ``None``), and what the JSON records of its scales and scheme."""

    bundle: object
    net: object
    reference: object | None
    record: dict = field(default_factory=dict)


def check_file(path: str | None, what: str) -> None:
    """A file the user named must exist and be a file."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise MissingFileError(f"{what} {path} is a folder, not a file")
    if not p.is_file():
        raise MissingFileError(f"no {what} {path}")


def check_clip(name: str, option: str) -> None:
    """A clip name the package knows, or a video file."""
    from .. import data

    if name in data.CLIPS:
        return
    if Path(name).is_dir():
        raise MissingFileError(f"{option} {name} is a folder, not a video file")
    if not Path(name).is_file():
        raise MissingFileError(f"{option} {name!r} is neither a clip name ({', '.join(sorted(data.CLIPS))}) nor a "
                               "video file")


def scale_learning(args, model: str, kind: str, lam: float) -> ScaleConfig:
    """The recipe's scale-learning config for ``model`` at ``lam``, with the options given."""
    from .. import recipes

    config = recipes.scale_config(model, mnist=kind == "mnist").replace(lam=lam)
    changes = {field: value for field, value in (("epochs", getattr(args, "epochs", None)),
                                                 ("lr", getattr(args, "lr", None)),
                                                 ("batch_size", getattr(args, "calibrate_batch", None)))
               if value is not None}
    return config.replace(**changes)


def _scheme(args, model: str, kind: str) -> SchemeConfig | None:
    """``--scheme``, ``--scheme-param`` and ``--allocate-bands`` as a config (``None``: not given)."""
    from .. import recipes

    param, allocate = getattr(args, "scheme_param", None), getattr(args, "allocate_bands", False)
    if args.scheme is None:
        if param is not None:
            raise UsageError("--scheme-param is the parameter of --scheme hysteresis or threshold; give --scheme")
        if allocate:
            raise UsageError("--allocate-bands spreads the band of --scheme hysteresis or threshold; give one of them")
        return None
    if args.scheme == "sigma-delta" and param is not None:
        raise UsageError("--scheme-param: the sigma-delta scheme has no parameter")
    try:
        return recipes.scheme_config(model, args.scheme, param, allocate)
    except ConfigError:
        raise UsageError(f"--allocate-bands spreads the band of --scheme hysteresis or threshold, not "
                         f"{args.scheme}") from None


def _checkpoint_model(args) -> tuple[str, bool]:
    """The model a ``--checkpoint`` names (checked against ``--model``) and whether its scales are per channel."""
    from ..files.checkpoints import load_checkpoint

    check_file(args.checkpoint, "checkpoint file")
    content = load_checkpoint(args.checkpoint)
    if args.model is not None and args.model != content["model"]:
        raise CheckpointError(f"{args.checkpoint} is a checkpoint of model {content['model']!r}, not {args.model!r}")
    return content["model"], any(t.dim() > 0 for t in content["log_scales"].values())


def plan_net(args, *, lam: float | None = None, kinds: tuple[str, ...] = ("image", "mnist"),
             with_scheme: bool = True, float64: bool = False) -> NetPlan:
    """Decide the network of a command from its arguments, checking every one before any work.

    ``lam``: the λ of scales to learn when not ``--lam`` (finetune's starting scales); ``kinds``: the model kinds
    the command takes; ``with_scheme``: whether ``--scheme`` and friends set the network's scheme (finetune's
    name the scheme trained for)."""
    from .. import models, recipes
    from ..files.scales import read_scales_file

    checkpoint = getattr(args, "checkpoint", None)
    scales_file = getattr(args, "scales", None)
    per_channel = getattr(args, "per_channel_scales", False)
    if checkpoint is not None:
        model, per_channel = _checkpoint_model(args)
    elif args.model is None:
        raise UsageError("--model is required" + (" (or --checkpoint FILE, which names its model)"
                                                  if hasattr(args, "checkpoint") else ""))
    else:
        model = args.model
    kind = models.kind(model)
    if kind not in kinds:
        raise UsageError(f"sigmadelta {args.command} takes an image model, and {model} takes MNIST digits; choose "
                         "squeezenet1_1, efficientnet-lite0 or vgg19")
    check_file(args.weights, "weights file")
    if model == "vgg19" and args.weights is None:
        raise UsageError("--model vgg19 needs --weights FILE: its ImageNet weights ship with no package (torchvision's "
                         "vgg19-dcbb9e9d.pth)")
    scheme = _scheme(args, model, kind) if with_scheme else None
    clip = getattr(args, "calibrate", None)
    if clip is not None and kind == "image":
        check_clip(clip, "--calibrate")
    if checkpoint is not None:
        scales = Scales("checkpoint", Path(checkpoint))
    elif scales_file is not None:
        check_file(scales_file, "scales file")
        content = read_scales_file(scales_file)
        if content["model"] != model:
            raise UsageError(f"{scales_file} holds scales for model {content['model']!r}, not {model!r}")
        per_channel = any(isinstance(k, list) for k in content["scales"].values())
        scales = Scales("file", Path(scales_file))
    else:
        explicit = getattr(args, "lam", None) if lam is None else lam
        if explicit is None:  # a scheme's default parameter goes with the λ it was read at
            use_scheme = scheme is not None and getattr(args, "scheme_param", None) is None
            explicit = recipes.scheme_setting(model, scheme.name)[1] if use_scheme else recipes.scale_lam(model)
        config = scale_learning(args, model, kind, explicit)
        max_frames = getattr(args, "calibrate_frames", None)
        shipped = recipes.shipped_scales(model, config) if clip is None and max_frames is None else None
        scales = (Scales("shipped", shipped) if shipped is not None else
                  Scales("learn", clip=None if kind == "mnist" else clip or recipes.CALIBRATION_CLIP, config=config,
                         max_frames=max_frames))
    needs_frames = scheme is not None and (scheme.name == "threshold" or scheme.allocate_bands)
    scheme_clip = (clip or recipes.CALIBRATION_CLIP) if needs_frames and kind == "image" else None
    return NetPlan(model, kind, args.weights, per_channel, scales, scheme, scheme_clip, float64)


def build_net(plan: NetPlan, progress: bool = True) -> Built:
    """Build the planned network: the model, converted (in float64 if the plan says so), with its scales and
    scheme; prints a line for each. Frames for it: ``bundle.preprocess(...)`` cast to ``net.dtype``."""
    import torch

    import sigmadelta

    from .. import models

    bundle = models.get(plan.model, weights=plan.weights)
    if plan.float64:
        bundle.model.double()
    net = sigmadelta.convert(bundle.model, bundle.example_input().to(torch.float64 if plan.float64 else torch.float32),
                             per_channel_scales=plan.per_channel)
    reference, record = None, {}
    s = plan.scales
    if s.source == "checkpoint":
        from ..files.checkpoints import apply_checkpoint

        reference = copy.deepcopy(net)  # the original, for agreement: fine-tuning changed the net's own weights
        ck = apply_checkpoint(net, s.path, plan.model)
        print(f"checkpoint: {s.path} (λ = {ck['lam']:g}, {ck['steps_done']} steps, {ck['scheme'].describe()})")
        record = {"checkpoint": str(s.path), "lam": ck["lam"], "steps": ck["steps_done"]}
    elif s.source in ("file", "shipped"):
        from ..files.scales import apply_scales

        meta = apply_scales(net, s.path, plan.model)
        what = "shipped with sigmadelta" if s.source == "shipped" else str(s.path)
        print(f"scales: {what} (λ = {meta.get('lam', '?'):g}, learned on {meta.get('clip', '?')})"
              if isinstance(meta.get("lam"), float) else f"scales: {what}")
        record = {"scales_file": str(s.path), "shipped": s.source == "shipped", "lam": meta.get("lam"),
                  "config": meta.get("config"), "commit": meta.get("commit")}
    else:
        record = _learn(plan, bundle, net, progress)
    if plan.scheme is not None:
        from ..learn.allocation import configure_scheme

        frames = _scheme_frames(plan, bundle)
        allocation = configure_scheme(net, plan.scheme, frames)
        where = f" on {plan.scheme_clip}" if plan.scheme_clip else ""
        print(f"scheme: {plan.scheme.describe()}" + (f", θ = τ·σ of each layer's input{where}"
                                                     if plan.scheme.name == "threshold" else ""))
        if allocation is not None:
            ratios = [b / before for b, before in zip(allocation.bands.values(), allocation.before.values())]
            print(f"  bands spread by output sensitivity{where}, same predicted error: {min(ratios):.2g}x .. "
                  f"{max(ratios):.2g}x the uniform ones")
    record["scheme"] = net.scheme_config.to_dict()
    return Built(bundle, net, reference, record)


def net_dtype(plan: NetPlan):
    """The dtype of the planned network (and of the frames it takes)."""
    import torch

    return torch.float64 if plan.float64 else torch.float32


def _scheme_frames(plan: NetPlan, bundle):
    """The frames θ and bands are measured on: the calibration clip, or MNIST training images (never test data)."""
    from .. import data

    if plan.scheme.values is not None or not (plan.scheme.name == "threshold" or plan.scheme.allocate_bands):
        return None
    if plan.kind == "mnist":
        return data.mnist_clip("train", temporal=False, max_frames=SCHEME_FRAMES_MNIST)[0].to(net_dtype(plan))
    return data.load_clip(plan.scheme_clip, bundle, max_frames=plan.scales.max_frames).to(net_dtype(plan))


def learn_mnist_scales(net, config: ScaleConfig, images: int, progress: bool = True) -> dict:
    """An MNIST MLP's scales, learned as the demo does (seconds) on the first ``images`` training images."""
    import sigmadelta

    from .. import data

    train, _ = data.mnist_clip("train", temporal=False, max_frames=images)
    print(f"scales: λ = {config.lam:g}, {config.epochs} epoch over the first {len(train):,} training images "
          f"({config.error} error, SGD lr {config.lr:g}, batch {config.batch_size})")
    sigmadelta.optimize_scales(net, train[:, 0], config=config, eval_data=train[:1000, 0], num_threads=1,
                               progress=progress)
    return {"learned_on": f"mnist train, {len(train)} images", "lam": config.lam, "config": config.to_dict()}


def _learn(plan: NetPlan, bundle, net, progress: bool) -> dict:
    """Learn the scales the plan asks for (image models: the paper's protocol on a clip, cached; the MNIST MLPs: as
    the demo does, in seconds)."""
    from .. import data

    s, config = plan.scales, plan.scales.config
    if plan.kind == "mnist":
        return learn_mnist_scales(net, config, MNIST_IMAGES, progress)
    from .._utils.distributed import process_rank_and_count
    from ..learn.calibrate import calibrate

    frames = data.load_clip(s.clip, bundle, max_frames=s.max_frames).to(net_dtype(plan))
    print(f"scales: λ = {config.lam:g}, learned on {s.clip} ({len(frames)} frames; rounding network, batch "
          f"{config.batch_size}, SGD lr {config.lr:g}, {config.epochs} epochs, {config.error} error, from "
          f"k = {config.init_scale:g}) or read from the user cache; the first time this takes 20 s to a few "
          "minutes on 2 cores")
    result = calibrate(net, frames, config.lam, model=plan.model, clip=str(s.clip), config=config,
                       progress=progress and process_rank_and_count()[0] == 0)  # under torchrun the first reports
    print(("  read from the cache: " if result.cached else "  saved to the cache: ") + str(result.path))
    return {"calibrated_on": str(s.clip), "lam": result.lam, "cache_file": str(result.path),
            "config": result.meta.get("config")}
