"""Fine-tuning runs as data: their config (:class:`FinetuneConfig`), result, and checkpoints (a converted
network's weights, biases and scales with the run that made them).

A checkpoint is a ``torch.save`` file of plain data (tensors, numbers, strings, lists, dicts), so it loads with
``torch.load(path, weights_only=True)``:

==============  ===============================================================================================
key             content
==============  ===============================================================================================
format          ``"sigmadelta-finetune/1"``
model           the model's name (``sigmadelta run --checkpoint`` builds this model)
lam, config     λ and the :class:`~sigmadelta.finetune.FinetuneConfig` as a dict
record          per-step loss, distillation error, surrogate cost and λ; seconds; processes
steps_done      steps trained (less than ``config["steps"]`` in an intermediate checkpoint)
layers          layer names in graph order; ``quantizers`` likewise
weights         layer -> weight (BatchNorm folded); ``biases`` layer -> bias
log_scales      quantizer -> κ (``k = exp(κ)``)
optimizer       Adam's state (to resume), or ``None``
meta            free-form: what it was trained on
==============  ===============================================================================================

Files are written atomically (temp file, then rename): a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import SigmaDeltaError
from .net import SigmaDeltaNet

__all__ = ["CHECKPOINT_FORMAT", "SCHEMES", "FinetuneConfig", "FinetuneResult", "FinetuneError", "save_checkpoint",
           "load_checkpoint", "apply_checkpoint"]

CHECKPOINT_FORMAT = "sigmadelta-finetune/1"
SCHEMES = ("rounding", "hysteresis")  # the paper's Sigma-Delta quantizer (its Rounding network); with hysteresis
ERRORS = ("kl", "l2-softmax")
COSTS = ("scaled", "rounded", "events")
LR_DECAYS = ("constant", "cosine")


class FinetuneError(SigmaDeltaError, ValueError):
    """Bad fine-tuning input (config, data, checkpoint), with what and where."""


@dataclass
class FinetuneConfig:
    """Every setting of one fine-tuning run; validated on creation, saved with the result.

    Attributes:
        steps: optimizer steps.
        window: ``T``, consecutive frames per training window (≥ 2: the cost needs a pair).
        batch: ``B``, windows per step (the *global* batch, split over processes under torchrun).
        lr_weights: Adam learning rate of the weights (and biases); 0 trains the scales only.
        lr_scales: Adam learning rate of the log-scales κ; 0 keeps the scales.
        error: distillation loss: ``"kl"`` (KL(original ‖ network) on softmaxes) or ``"l2-softmax"``.
        temperature: softmax temperature of the distillation loss (KL scaled by ``τ²``).
        scheme: the quantizer scheme trained for: ``"rounding"``, the paper's Sigma-Delta (trained as its Rounding
            network, frame by frame), or ``"hysteresis"`` (trained as the Sigma-Delta network with hysteresis
            ``h``, window by window from zero state: the level recurrence is not per frame).
        hysteresis: ``h`` of the hysteresis scheme (ignored by ``"rounding"``).
        allocate_bands: with ``"hysteresis"``, spread ``h`` across the quantizers by output sensitivity
            (:func:`sigmadelta.allocate_bands`, same predicted error as uniform ``h``) on the first training
            clip before training; the checkpoint keeps each quantizer's ``h``.
        cost: the cost surrogate per unit and frame pair, times the unit's fan-out: ``"scaled"`` (``k|Δx|``, the
            additions), ``"rounded"`` (``|Δ round_ste(kx)|``) or ``"events"`` (``tanh(k|Δx| / (1 + h))``: about
            one message per ``1 + h`` levels moved, at most one per frame: the events).
        lam_warmup: fraction of the steps over which λ ramps linearly from 0 to its value.
        lr_decay: ``"constant"`` or ``"cosine"`` (to 0 at the last step).
        train_biases: train the biases along with the weights.
        grad_clip: clip the gradient's global norm to this (0: off).
        seed: seeds the window sampler (the only randomness).
        checkpoint_every: steps between checkpoints when a checkpoint path is given.
        version: the format of this config.
    """

    steps: int = 1000
    window: int = 8
    batch: int = 4
    lr_weights: float = 1e-5
    lr_scales: float = 1e-2
    error: str = "kl"
    temperature: float = 1.0
    scheme: str = "rounding"
    hysteresis: float = 1.0
    allocate_bands: bool = False
    cost: str = "scaled"
    lam_warmup: float = 0.1
    lr_decay: str = "cosine"
    train_biases: bool = True
    grad_clip: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    version: int = 1

    def __post_init__(self):
        problems = []
        for name, choices in (("error", ERRORS), ("scheme", SCHEMES), ("cost", COSTS), ("lr_decay", LR_DECAYS)):
            if getattr(self, name) not in choices:
                problems.append(f"{name}={getattr(self, name)!r} (choose from {choices})")
        for name, ok in (("steps", self.steps >= 0), ("window", self.window >= 2), ("batch", self.batch >= 1),
                         ("checkpoint_every", self.checkpoint_every >= 1), ("seed", self.seed >= 0)):
            if not (isinstance(getattr(self, name), int) and ok):
                problems.append(f"{name}={getattr(self, name)!r}")
        for name in ("lr_weights", "lr_scales", "grad_clip", "temperature", "lam_warmup", "hysteresis"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"{name}={v!r}")
        if not isinstance(self.allocate_bands, bool) or (self.allocate_bands and self.scheme != "hysteresis"):
            problems.append(f"allocate_bands={self.allocate_bands!r} (a bool; True only with scheme='hysteresis')")
        if not (self.temperature > 0 and self.lam_warmup <= 1):
            problems.append(f"need temperature > 0 and lam_warmup <= 1 (got {self.temperature}, {self.lam_warmup})")
        if self.version != 1:
            problems.append(f"version={self.version!r} (this library reads version 1)")
        if problems:
            raise FinetuneError("FinetuneConfig: bad " + "; ".join(problems))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "FinetuneConfig":
        """A copy with ``changes`` (validated; an unknown field is a :class:`FinetuneError`)."""
        return FinetuneConfig.from_dict(self.to_dict() | changes)

    def key(self) -> dict:
        """The settings that change the result: :meth:`to_dict` without ``hysteresis`` when the scheme does not
        use it and without ``allocate_bands`` when off (so runs cached before the fields existed keep their key)."""
        d = self.to_dict()
        if self.scheme != "hysteresis":
            d.pop("hysteresis")
        if not self.allocate_bands:
            d.pop("allocate_bands")
        return d

    def apply_scheme(self, net: SigmaDeltaNet) -> None:
        """Give ``net`` the scheme this run trains for (the paper's rounding leaves the net's scheme alone)."""
        if self.scheme == "hysteresis":
            net.set_scheme("hysteresis", h=self.hysteresis)

    @classmethod
    def from_dict(cls, d: dict) -> "FinetuneConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise FinetuneError(f"FinetuneConfig: unknown settings {sorted(unknown)}")
        return cls(**d)


@dataclass
class FinetuneResult:
    """What a run did. ``record`` holds per step: ``loss``, ``error`` (distillation), ``cost`` (surrogate
    additions per frame), ``lam`` (λ after warm-up); and ``seconds``, ``world_size``."""

    config: FinetuneConfig
    lam: float
    record: dict = field(default_factory=dict)
    steps_done: int = 0


def _state(net: SigmaDeltaNet) -> dict:
    return dict(layers=list(net.layers), quantizers=list(net.quantizers),
                weights={n: m.weight.detach().clone() for n, m in net.layers.items()},
                biases={n: m.bias.detach().clone() for n, m in net.layers.items() if m.bias is not None},
                log_scales={n: q.log_scale.detach().clone() for n, q in net.quantizers.items()},
                hysteresis_h=dict(net.scheme_params) if net.scheme == "hysteresis" else {})


def save_checkpoint(path, net: SigmaDeltaNet, result, model: str = "", optimizer=None,
                    meta: dict | None = None) -> Path:
    """Write ``net``'s weights and scales with the run's model name, config, λ and record, atomically.

    ``result`` is a :class:`~sigmadelta.finetune.FinetuneResult` (its config, λ, record and steps done).

    Loadable with ``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only.
    """
    content = dict(format=CHECKPOINT_FORMAT, model=model, lam=float(result.lam), config=result.config.to_dict(),
                   record=result.record, steps_done=int(result.steps_done), **_state(net),
                   optimizer=None if optimizer is None else optimizer.state_dict(), meta=dict(meta or {}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(content, tmp)
        os.replace(tmp, path)  # atomic: readers see the old file or the whole new one
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load_checkpoint(path) -> dict:
    """Read a checkpoint (``weights_only``), format checked. ``["model"]`` names the model it is for."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    try:
        content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # a zip/pickle error, or a pickle that needs more than weights_only allows
        raise FinetuneError(f"{path} is not a fine-tuning checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise FinetuneError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT!r} (found {found!r})")
    return content


def apply_checkpoint(net: SigmaDeltaNet, checkpoint, model: str | None = None) -> dict:
    """Load a checkpoint's weights, biases and scales into ``net`` (checked before anything changes), and the
    scheme it was trained for when that is hysteresis (:meth:`FinetuneConfig.apply_scheme`).

    Args:
        net: the converted network of the checkpoint's model.
        checkpoint: a path, or the dict :func:`load_checkpoint` returned.
        model: if given, the checkpoint must be for this model name.

    Returns:
        The checkpoint's content.
    """
    ck = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    where = "checkpoint" if isinstance(checkpoint, dict) else str(checkpoint)
    if model is not None and ck["model"] != model:
        raise FinetuneError(f"{where} is for model {ck['model']!r}, not {model!r}")
    if ck["layers"] != list(net.layers) or ck["quantizers"] != list(net.quantizers):
        raise FinetuneError(f"{where} (model {ck['model']!r}) does not fit this network: its layers "
                            f"{ck['layers'][:3]}... vs the network's {list(net.layers)[:3]}...")
    for name, m in net.layers.items():
        for what, t, have in (("weight", ck["weights"][name], m.weight), ("bias", ck["biases"].get(name), m.bias)):
            if (t is None) != (have is None) or (t is not None and t.shape != have.shape):
                raise FinetuneError(f"{where}: layer {name!r} {what} does not fit the network's")
    for name, q in net.quantizers.items():
        if ck["log_scales"][name].shape != q.log_scale.shape:
            raise FinetuneError(f"{where}: scale {name!r} has shape {tuple(ck['log_scales'][name].shape)}, "
                                f"the network's {tuple(q.log_scale.shape)}")
    with torch.no_grad():
        for name, m in net.layers.items():
            m.weight.copy_(ck["weights"][name])
            if m.bias is not None:
                m.bias.copy_(ck["biases"][name])
        for name, q in net.quantizers.items():
            q.log_scale.copy_(ck["log_scales"][name])
    FinetuneConfig.from_dict(ck["config"]).apply_scheme(net)  # the net runs the scheme it was trained for
    if ck.get("hysteresis_h"):  # each quantizer's h as trained (spread by allocate_bands); older files lack it
        net.set_scheme("hysteresis", h=ck["hysteresis_h"])
    net.reset()
    return ck
