"""Every per-model default of the package, in one place: the CLI and the experiments read them from here (the CLI's
options default to ``None``, so that the recipe decides).

Each number here was read off a measured curve; the experiments' README says which. A model without an entry gets
the paper's settings. The scales that the image models learn at their default λ on the calibration clip are results
of pinned data, so they ship with the package (``recipes/scales/MODEL.json``, written by
``python -m sigmadelta.paper.default_scales``, which records the config and the commit): every user gets the same
scales, at once, whatever the machine's float path.

>>> from sigmadelta import recipes
>>> recipes.scale_lam("squeezenet1_1"), recipes.scale_config("squeezenet1_1").init_scale
(3e-11, 1.0)
>>> recipes.scheme_config("squeezenet1_1", "threshold").describe()
'threshold τ 0.03'
"""

from __future__ import annotations

import json
from pathlib import Path

from ..config import FinetuneConfig, ScaleConfig, SchemeConfig
from ..core.functional import HYSTERESIS, SCHEMES, SIGMA_DELTA_SCHEME

__all__ = ["PAPER_VIDEO", "DEMO_MLP", "INIT_SCALES", "SCALE_LAMS", "SCHEME_DEFAULTS", "FINETUNE_SETTINGS",
           "FINETUNE_LAMS", "FINETUNE_TRAIN", "CALIBRATION_CLIP", "SHIPPED_SCALES", "scale_config", "scale_lam",
           "shipped_scales", "scheme_setting", "scheme_config", "finetune_config", "finetune_lam"]

# ---------------------------------------------------------------------------------------------------------
# learning the scales

# The paper's VGG-19 video recipe (paper-notes 6 and 7.3): L2 error on the softmax probabilities, SGD lr 0.1, 5
# epochs, one frame per minibatch, straight-through rounding, starting at k = 16 (not the paper's 1: that was for
# 0-255 pixels; inputs normalized to about [-1, 1] get 3 levels at k = 1, no frame agrees with the original and the
# L2 error on probabilities has no gradient left).
PAPER_VIDEO = ScaleConfig(error="l2-softmax", lr=0.1, epochs=5, batch_size=1, eval_every=None, init_scale=16.0)

# The demo's recipe for the MNIST MLPs (the paper's MNIST settings, one epoch): KL error, SGD lr 0.001, batch 10.
DEMO_MLP = ScaleConfig(error="kl", lr=0.001, epochs=1, batch_size=10, eval_every=None)

# Where learning starts for image models fed 0-255 pixels, like the paper's VGG-19: where the paper did (SqueezeNet:
# Caffe inputs, 0-255 minus the mean; from k = 1 its curve is better at every λ than from 16).
INIT_SCALES = {"squeezenet1_1": 1.0}

# The clip image models learn their scales on (never a test clip).
CALIBRATION_CLIP = "carphone"

# Each model's default λ: for image models read off the trade-off curve of `sigmadelta reproduce video` (the largest λ
# that keeps top-1 agreement >= 90% on both static test clips, jwpIntro and testMovie), the paper's for VGG-19; for
# the MNIST MLPs the demo's.
SCALE_LAMS = {"vgg19": 1e-11, "efficientnet-lite0": 3e-11, "squeezenet1_1": 3e-11, "mnist-mlp": 1e-8,
              "mnist-mlp-wide": 1e-8}


def scale_config(model: str, *, mnist: bool = False) -> ScaleConfig:
    """How ``model``'s scales are learned: :data:`DEMO_MLP` for the MNIST MLPs (``mnist``), else the paper's video
    recipe :data:`PAPER_VIDEO` from the model's initial scale (:data:`INIT_SCALES`)."""
    if mnist:
        return DEMO_MLP
    return PAPER_VIDEO.replace(init_scale=INIT_SCALES.get(model, PAPER_VIDEO.init_scale))


def scale_lam(model: str) -> float:
    """The default trade-off λ of ``model``'s scales: :data:`SCALE_LAMS`, else the paper's 1e-11."""
    return SCALE_LAMS.get(model, 1e-11)


SHIPPED_SCALES = Path(__file__).parent / "scales"  # MODEL.json: scales learned at the default λ on CALIBRATION_CLIP


def shipped_scales(model: str, config: ScaleConfig) -> Path | None:
    """The scales file shipped for ``model`` if it was learned with exactly ``config`` (λ included) on
    :data:`CALIBRATION_CLIP`, else ``None`` (they must be learned)."""
    path = SHIPPED_SCALES / f"{model}.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8")).get("meta", {})
    return path if meta.get("config") == config.to_dict() and meta.get("clip") == CALIBRATION_CLIP else None


# ---------------------------------------------------------------------------------------------------------
# delta schemes

# Per model and scheme, (parameter, λ of the scales): h for hysteresis, τ for threshold (θ = τ·σ of each layer's input
# on the calibration clip; λ None: the model's, as k is unused), read off `sigmadelta reproduce schemes`: the most
# events saved that keeps top-1 agreement >= 90% on both static test clips (jwpIntro, testMovie). Other models take
# the first entry's.
SCHEME_DEFAULTS = {
    "squeezenet1_1": {SIGMA_DELTA_SCHEME: (0.0, None), HYSTERESIS: (1.0, 1e-11), "threshold": (0.03, None)},
    "efficientnet-lite0": {SIGMA_DELTA_SCHEME: (0.0, None), HYSTERESIS: (0.25, None), "threshold": (0.015, None)},
}


def scheme_setting(model: str, scheme: str) -> tuple[float, float]:
    """``(parameter, λ)``: the default h or τ of ``scheme`` for ``model`` and the λ of the scales it goes with."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {SCHEMES}")
    table = SCHEME_DEFAULTS.get(model)
    param, lam = (table or next(iter(SCHEME_DEFAULTS.values())))[scheme]
    return param, (lam if (lam is not None and table is not None) else scale_lam(model))


def scheme_config(model: str, scheme: str = SIGMA_DELTA_SCHEME, param: float | None = None,
                  allocate_bands: bool = False) -> SchemeConfig:
    """The :class:`~sigmadelta.config.SchemeConfig` of ``scheme`` for ``model``: ``param`` if given, else the
    model's default (:func:`scheme_setting`)."""
    if param is None:
        param = scheme_setting(model, scheme)[0]
    return SchemeConfig(scheme, float(param), allocate_bands=allocate_bands)


# ---------------------------------------------------------------------------------------------------------
# fine-tuning

# measured settings (docs/finetuning.md); other models get FinetuneConfig()'s
FINETUNE_SETTINGS = {
    "mnist-mlp": dict(steps=8000, window=8, batch=32, lr_weights=3e-4, lr_scales=0.0, checkpoint_every=1000),
    "squeezenet1_1": dict(steps=360, window=8, batch=1, lr_weights=2e-5, lr_scales=1e-2, checkpoint_every=20),
    "efficientnet-lite0": dict(steps=200, window=8, batch=1, lr_weights=2e-5, lr_scales=1e-2, checkpoint_every=20),
}
FINETUNE_LAMS = {"mnist-mlp": 3e-6, "squeezenet1_1": 1e-10, "efficientnet-lite0": 1e-10}
# image models train on a bundled clip and synthetic motion over photos (the MNIST MLPs on Temporal-MNIST's train)
FINETUNE_TRAIN = (CALIBRATION_CLIP, "synthetic")


def finetune_config(model: str) -> FinetuneConfig:
    """The default :class:`~sigmadelta.config.FinetuneConfig` of ``sigmadelta finetune --model MODEL``."""
    return FinetuneConfig(**FINETUNE_SETTINGS.get(model, {}))


def finetune_lam(model: str) -> float:
    """The default λ (per frame) of ``sigmadelta finetune --model MODEL``."""
    return FINETUNE_LAMS.get(model, 1e-10)
