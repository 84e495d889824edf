"""The one validated record of how scales are learned: :class:`ScaleConfig`.

It travels from the CLI and the experiments to :func:`sigmadelta.optimize_scales`, keys the calibration cache
(:func:`sigmadelta.scales.calibrate`), and is saved as JSON with every scales file and result, so a result says
exactly how it was obtained. Bad values are refused when the config is made, with the field named.

>>> from sigmadelta.config import ScaleConfig, PAPER_VIDEO
>>> PAPER_VIDEO.lr, PAPER_VIDEO.error, PAPER_VIDEO.batch_size
(0.1, 'l2-softmax', 1)
>>> ScaleConfig(lr=-1)
Traceback (most recent call last):
...
sigmadelta.config.ConfigError: scale config: lr must be a finite number > 0, got -1
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import SigmaDeltaError
from .losses import ERRORS

__all__ = ["ScaleConfig", "ConfigError", "PAPER_VIDEO", "DEMO_MLP", "COSTS", "NOISES", "NORMALIZATIONS"]

COSTS = ("rounding", "sigma_delta")
NOISES = ("round", "uniform")
NORMALIZATIONS = ("paper", "mean")


class ConfigError(SigmaDeltaError, ValueError):
    """A setting that cannot be used; the message names the field and the value."""


@dataclass(frozen=True)
class ScaleConfig:
    """How scales are learned (paper section 4; :func:`sigmadelta.optimize_scales` says what each does).

    Attributes:
        error: a name of :data:`sigmadelta.losses.ERRORS` (``"kl"`` expects logits) or a callable (saved by name).
        lam: the trade-off λ ≥ 0; ``None`` where the caller gives it (a sweep over several λ).
        lr: plain-SGD learning rate on the log-scales κ.
        epochs: passes over the data.
        batch_size: samples per minibatch (time steps per window of a ``[T, B, ...]`` stream).
        cost: ``"rounding"`` (the paper's) or ``"sigma_delta"`` (on clips; beyond the paper).
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
        for name, choices in (("cost", COSTS), ("noise", NOISES), ("normalization", NORMALIZATIONS)):
            if getattr(self, name) not in choices:
                self._refuse(name, f"one of {choices}")
        if self.lam is not None and not _number(self.lam, 0, closed=True):
            self._refuse("lam", "a finite number >= 0")
        if not _number(self.lr, 0):
            self._refuse("lr", "a finite number > 0")
        if self.init_scale is not None and not _number(self.init_scale, 0):
            self._refuse("init_scale", "a finite number > 0")
        for name, low in (("epochs", 0), ("batch_size", 1), ("eval_batch_size", 1)):
            if not _integer(getattr(self, name), low):
                self._refuse(name, f"an integer >= {low}")
        if self.eval_every is not None and not _integer(self.eval_every, 1):
            self._refuse("eval_every", "an integer >= 1 or None")

    def _refuse(self, name: str, what: str):
        raise ConfigError(f"scale config: {name} must be {what}, got {getattr(self, name)!r}")

    @property
    def error_name(self) -> str:
        return self.error if isinstance(self.error, str) else getattr(self.error, "__name__", "custom")

    def replace(self, **changes) -> "ScaleConfig":
        """A copy with ``changes`` (validated; an unknown field is a :class:`ConfigError`)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"scale config: unknown settings {sorted(unknown)}; "
                              f"choose from {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready: every field, the error by name."""
        return dataclasses.asdict(self) | {"error": self.error_name}

    @classmethod
    def from_dict(cls, values: Mapping) -> "ScaleConfig":
        """The config saved by :meth:`to_dict` (unknown keys refused)."""
        return cls().replace(**dict(values))


def _number(v, low: float, closed: bool = False) -> bool:
    ok_type = isinstance(v, (int, float)) and not isinstance(v, bool)
    return ok_type and math.isfinite(v) and (v >= low if closed else v > low)


def _integer(v, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


# The paper's VGG-19 video recipe (paper-notes 6 and 7.3): L2 error on the softmax probabilities, SGD lr 0.1, 5
# epochs, one frame per minibatch, straight-through rounding, starting at k = 16 (not the paper's 1: that was for
# 0-255 pixels; inputs normalized to about [-1, 1] get 3 levels at k = 1, no frame agrees with the original and the
# L2 error on probabilities has no gradient left). λ depends on the model: sigmadelta.scales.default_lam.
PAPER_VIDEO = ScaleConfig(error="l2-softmax", lr=0.1, epochs=5, batch_size=1, eval_every=None, init_scale=16.0)

# The demo's recipe for the MNIST MLPs (the paper's MNIST settings, one epoch): KL error, SGD lr 0.001, batch 10.
DEMO_MLP = ScaleConfig(error="kl", lr=0.001, epochs=1, batch_size=10, eval_every=None)
