"""The validated settings that travel through the package, one dataclass per concept:

- :class:`ScaleConfig`: how scales are learned (paper section 4; :func:`sigmadelta.optimize_scales`);
- :class:`SchemeConfig`: the delta scheme of the sigma-delta mode and its parameter (h or θ);
- :class:`FinetuneConfig`: how weights and scales are fine-tuned (:func:`sigmadelta.learn.finetune.finetune`).

All three follow one convention: frozen; checked when made, a bad value raising :class:`~sigmadelta.ConfigError`
that names the field; ``replace(**changes)`` (checked again; an unknown field is refused); ``to_dict()`` (JSON-ready)
and ``from_dict()`` (unknown keys refused), so every scales file, checkpoint, cache entry and result records exactly
how it was obtained. Each model's default settings are in :mod:`sigmadelta.recipes`.

The words, each with one meaning (the tuples below are the only spellings):

- :data:`SCHEMES`: how a quantizer forms its levels (``"sigma-delta"``, the paper's; ``"hysteresis"``; ``"threshold"``);
- :data:`SCALE_COSTS`: which network's additions scale learning penalises (``"rounding"``, ``"sigma_delta"``);
- :data:`SURROGATES`: the differentiable stand-in for the delta network's cost that fine-tuning penalises;
- :data:`~sigmadelta.core.losses.ERRORS`: error measures between the network's and the original's outputs;
- conventions of counting a delta network's messages, ``"additions"`` and ``"events"``: :mod:`sigmadelta.accounting`.

>>> from sigmadelta.config import ScaleConfig, SchemeConfig
>>> ScaleConfig(lr=-1)
Traceback (most recent call last):
...
sigmadelta.errors.ConfigError: ScaleConfig: lr must be a finite number > 0, got -1
>>> SchemeConfig("hysteresis", 1.0).to_dict()["param"]
1.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .core.functional import HYSTERESIS, SCHEMES, SIGMA_DELTA_SCHEME, THRESHOLD
from .core.losses import DISTILLATION_ERRORS, ERRORS
from .errors import ConfigError

__all__ = ["ScaleConfig", "SchemeConfig", "FinetuneConfig", "ConfigError", "SCHEMES", "SCALE_COSTS", "NOISES",
           "NORMALIZATIONS", "SURROGATES", "LR_DECAYS"]

SCALE_COSTS = ("rounding", "sigma_delta")
NOISES = ("round", "uniform")
NORMALIZATIONS = ("paper", "mean")
SURROGATES = ("scaled", "rounded", "events")
LR_DECAYS = ("constant", "cosine")


class _Config:
    """What the configs share: replace, to_dict, from_dict, and refusing a field with its name."""

    def _refuse(self, name: str, what: str):
        raise ConfigError(f"{type(self).__name__}: {name} must be {what}, got {getattr(self, name)!r}")

    def _check_choice(self, name: str, choices) -> None:
        if getattr(self, name) not in choices:
            self._refuse(name, f"one of {tuple(choices)}")

    def _check_number(self, name: str, low: float, closed: bool = True, optional: bool = False) -> None:
        v = getattr(self, name)
        if optional and v is None:
            return
        if not _number(v, low, closed):
            self._refuse(name, f"a finite number {'>=' if closed else '>'} {low:g}" + (" or None" if optional else ""))

    def _check_integer(self, name: str, low: int, optional: bool = False) -> None:
        v = getattr(self, name)
        if not (optional and v is None) and not _integer(v, low):
            self._refuse(name, f"an integer >= {low}" + (" or None" if optional else ""))

    def replace(self, **changes):
        """A copy with ``changes`` (checked; an unknown field is a :class:`ConfigError`)."""
        fields = [f.name for f in dataclasses.fields(self)]
        unknown = set(changes) - set(fields)
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown settings {sorted(unknown)}; choose from {fields}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready: every field."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping):
        """The config saved by :meth:`to_dict` (unknown keys refused)."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a mapping of settings, got {type(values).__name__}")
        return cls().replace(**dict(values))


def _plain(v):
    if isinstance(v, _Config):
        return v.to_dict()
    if isinstance(v, Mapping):
        return dict(v)
    return v


def _number(v, low: float, closed: bool = True) -> bool:
    ok_type = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok_type and math.isfinite(v) and (v >= low if closed else v > low)


def _integer(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleConfig(_Config):
    """How scales are learned (paper section 4; :func:`sigmadelta.optimize_scales` says what each does).

    Attributes:
        error: a name of :data:`sigmadelta.core.losses.ERRORS` (``"kl"`` expects logits) or a callable (saved by
            name).
        lam: the trade-off λ ≥ 0; ``None`` where the caller gives it (a sweep over several λ).
        lr: plain-SGD learning rate on the log-scales κ.
        epochs: passes over the data.
        batch_size: samples per minibatch (time steps per window of a ``[T, B, ...]`` stream).
        cost: one of :data:`SCALE_COSTS`: the additions of the ``"rounding"`` network (the paper's) or of the
            ``"sigma_delta"`` network (on clips; beyond the paper).
        noise: ``"round"`` (straight-through rounding) or ``"uniform"`` (``kx + U(−½, ½)``).
        normalization: ``"paper"`` (the cost summed over the minibatch) or ``"mean"`` (averaged).
        eval_every: evaluate every this many epochs (and at 0 and at the end); ``None``: only then.
        eval_batch_size: samples (or steps) per evaluation call; bounds memory, changes no result.
        init_scale: where learning starts (every ``k``); ``None``: the network's current scales.
    """

    error: object = "kl"
    lam: float | None = None
    lr: float = 0.001
    epochs: int = 30
    batch_size: int = 10
    cost: str = "rounding"
    noise: str = "round"
    normalization: str = "paper"
    eval_every: int | None = 1
    eval_batch_size: int = 256
    init_scale: float | None = None

    def __post_init__(self):
        if not (callable(self.error) or self.error in ERRORS):
            self._refuse("error", f"one of {ERRORS} or a callable")
        self._check_choice("cost", SCALE_COSTS)
        self._check_choice("noise", NOISES)
        self._check_choice("normalization", NORMALIZATIONS)
        self._check_number("lam", 0, optional=True)
        self._check_number("lr", 0, closed=False)
        self._check_number("init_scale", 0, closed=False, optional=True)
        self._check_integer("epochs", 0)
        self._check_integer("batch_size", 1)
        self._check_integer("eval_batch_size", 1)
        self._check_integer("eval_every", 1, optional=True)

    @property
    def error_name(self) -> str:
        return self.error if isinstance(self.error, str) else getattr(self.error, "__name__", "custom")

    def to_dict(self) -> dict:
        """JSON-ready: every field, the error by name."""
        return super().to_dict() | {"error": self.error_name}


@dataclass(frozen=True)
class SchemeConfig(_Config):
    """The delta scheme of the sigma-delta mode (:mod:`sigmadelta.core.functional`) and its parameter.

    Attributes:
        name: one of :data:`SCHEMES`: ``"sigma-delta"`` (the paper's; no parameter), ``"hysteresis"`` (a level moves
            only when ``k x`` is ``0.5 + h`` or more from it) or ``"threshold"`` (the peers' thresholded deltas, a unit
            sends where its input moved more than θ from the value last sent).
        param: ``h`` (hysteresis, in levels) or ``τ`` (threshold: θ = τ·σ of each quantizer's input, measured on
            calibration frames), the same for every quantizer; 0 for sigma-delta.
        values: quantizer name -> ``h`` or ``θ`` as set in a network (what scales files and checkpoints record);
            when given they are set as they are, ``param`` only says where they came from.
        allocate_bands: spread the band across the quantizers by output sensitivity at the same predicted error
            (:func:`sigmadelta.learn.allocation.allocate_bands`; hysteresis and threshold only).
        version: the format of this config.

    :func:`sigmadelta.learn.allocation.configure_scheme` sets a network to what a config says.
    """

    name: str = SIGMA_DELTA_SCHEME
    param: float = 0.0
    values: Mapping[str, float] | None = None
    allocate_bands: bool = False
    version: int = 1

    def __post_init__(self):
        self._check_choice("name", SCHEMES)
        self._check_number("param", 0)
        if self.name == SIGMA_DELTA_SCHEME and self.param != 0:
            self._refuse("param", "0: the sigma-delta scheme has no parameter")
        if self.values is not None:
            if not isinstance(self.values, Mapping) or not all(
                    isinstance(k, str) and _number(v, 0) for k, v in self.values.items()):
                self._refuse("values", "a mapping quantizer name -> a finite number >= 0, or None")
            object.__setattr__(self, "values", {k: float(v) for k, v in self.values.items()})
        if not isinstance(self.allocate_bands, bool) or (self.allocate_bands and self.name not in (HYSTERESIS,
                                                                                                  THRESHOLD)):
            self._refuse("allocate_bands", f"a bool, True only with {HYSTERESIS!r} or {THRESHOLD!r}")
        if self.version != 1:
            self._refuse("version", "1 (the format this library reads)")

    @property
    def symbol(self) -> str:
        """The parameter's name: ``"h"``, ``"τ"``, or ``""`` for sigma-delta."""
        return {HYSTERESIS: "h", THRESHOLD: "τ"}.get(self.name, "")

    def describe(self) -> str:
        """One line: ``"hysteresis h 1 (bands spread)"``, ``"threshold τ 0.07"``, ``"sigma-delta"``."""
        text = self.name if not self.symbol else f"{self.name} {self.symbol} {self.param:g}"
        return text + (" (bands spread)" if self.allocate_bands else "")


@dataclass(frozen=True)
class FinetuneConfig(_Config):
    """Every setting of one fine-tuning run (:mod:`sigmadelta.learn.finetune`); saved with its checkpoints.

    Attributes:
        steps: optimizer steps.
        window: ``T``, consecutive frames per training window (≥ 2: the cost needs a pair).
        batch: ``B``, windows per step (the *global* batch, split over processes under torchrun).
        lr_weights: Adam learning rate of the weights (and biases); 0 trains the scales only.
        lr_scales: Adam learning rate of the log-scales κ; 0 keeps the scales.
        error: the distillation loss, one of :data:`~sigmadelta.core.losses.DISTILLATION_ERRORS`: ``"distill-kl"``
            (KL(original ‖ network) on the softmaxes, at ``temperature``) or ``"l2-softmax"``.
        temperature: softmax temperature of ``"distill-kl"`` (the KL is scaled by ``τ²``).
        scheme: the delta scheme trained for (a :class:`SchemeConfig`): ``"sigma-delta"``, the paper's (trained as
            its Rounding network, frame by frame), or ``"hysteresis"`` with ``param`` = h (trained as the
            Sigma-Delta network with hysteresis, window by window from zero state), with ``allocate_bands`` to
            spread h by output sensitivity on the first training clip first.
        surrogate: one of :data:`SURROGATES`, the cost penalised per unit and frame pair, times the unit's fan-out:
            ``"scaled"`` (``k|Δx|``, the additions), ``"rounded"`` (``|Δ round_ste(kx)|``) or ``"events"``
            (``tanh(k|Δx| / (1 + h))``: about one message per ``1 + h`` levels moved, at most one per frame).
        lam_warmup: fraction of the steps over which λ ramps linearly from 0 to its value.
        lr_decay: ``"constant"`` or ``"cosine"`` (to 0 at the last step).
        train_biases: train the biases along with the weights.
        grad_clip: clip the gradient's global norm to this (0: off).
        seed: seeds the window sampler (the only randomness).
        checkpoint_every: steps between checkpoints when a checkpoint path is given (changes no result).
        version: the format of this config.
    """

    steps: int = 1000
    window: int = 8
    batch: int = 4
    lr_weights: float = 1e-5
    lr_scales: float = 1e-2
    error: str = "distill-kl"
    temperature: float = 1.0
    scheme: SchemeConfig = SchemeConfig()
    surrogate: str = "scaled"
    lam_warmup: float = 0.1
    lr_decay: str = "cosine"
    train_biases: bool = True
    grad_clip: float = 0.0
    seed: int = 0
    checkpoint_every: int = 100
    version: int = 2

    def __post_init__(self):
        if isinstance(self.scheme, Mapping):
            try:
                object.__setattr__(self, "scheme", SchemeConfig.from_dict(self.scheme))
            except ConfigError as e:
                raise ConfigError(f"{type(self).__name__}: scheme: {e}") from None
        if not isinstance(self.scheme, SchemeConfig) or self.scheme.name == THRESHOLD:
            self._refuse("scheme", f"a SchemeConfig of {SIGMA_DELTA_SCHEME!r} or {HYSTERESIS!r}")
        self._check_choice("error", DISTILLATION_ERRORS)
        self._check_choice("surrogate", SURROGATES)
        self._check_choice("lr_decay", LR_DECAYS)
        self._check_integer("steps", 0)
        self._check_integer("window", 2)
        self._check_integer("batch", 1)
        self._check_integer("checkpoint_every", 1)
        self._check_integer("seed", 0)
        for name in ("lr_weights", "lr_scales", "grad_clip", "lam_warmup"):
            self._check_number(name, 0)
        self._check_number("temperature", 0, closed=False)
        if self.lam_warmup > 1:
            self._refuse("lam_warmup", "at most 1")
        if not isinstance(self.train_biases, bool):
            self._refuse("train_biases", "a bool")
        if self.version != 2:
            self._refuse("version", "2 (the format this library reads)")

    def key(self) -> dict:
        """The settings that change the result (:meth:`to_dict` without ``checkpoint_every``)."""
        return {k: v for k, v in self.to_dict().items() if k != "checkpoint_every"}
