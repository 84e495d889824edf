"""The model registry: a name maps to a builder that returns a :class:`ModelBundle`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .._utils.torchfile import what_file
from ..errors import MissingFileError, UnknownNameError, WeightsError

__all__ = ["ModelBundle", "ModelSpec", "register", "get", "names", "kind", "catalog", "load_weights"]


@dataclass
class ModelBundle:
    """A ready-to-use network and everything needed to feed it and read its output.

    Attributes:
        name: the registry name, e.g. ``"efficientnet-lite0"``.
        model: the network, in eval mode; returns logits.
        preprocess: raw data -> model input ``[N, *input_shape]`` float32 (uint8 frames ``[N, H, W, 3]`` for
            image models, uint8 digits ``[N, 28, 28]`` for the MNIST MLPs).
        classes: the output classes' names, in index order.
        input_shape: one sample's shape, without the batch dimension.
        source: where the weights came from (a package, the user cache, a file, or "random").
        info: extra facts, e.g. the MLP's training recipe and measured test accuracy.
        kind: what it takes: ``"image"`` (RGB video frames) or ``"mnist"`` (MNIST digits).
    """

    name: str
    model: nn.Module
    preprocess: Callable
    classes: list[str]
    input_shape: tuple[int, ...]
    source: str = ""
    info: dict = field(default_factory=dict)
    kind: str = "image"

    def example_input(self, batch: int = 1) -> torch.Tensor:
        """Zeros ``[batch, *input_shape]``: the ``example_input`` that :func:`sigmadelta.convert` needs."""
        return torch.zeros(batch, *self.input_shape)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry. ``build(weights, pretrained, progress)`` makes the bundle; ``present()`` says, without
    building anything, whether its pretrained weights are at hand; ``kind`` is the bundle's (what it takes)."""

    name: str
    build: Callable[..., ModelBundle]
    description: str
    source: str
    present: Callable[[], bool]
    kind: str = "image"


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def names() -> list[str]:
    """The names :func:`get` knows."""
    return list(_REGISTRY)


def kind(name: str) -> str:
    """What model ``name`` takes, known without building it: ``"image"`` (RGB frames) or ``"mnist"`` (digits)."""
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; the known models are {names()}")
    return _REGISTRY[name].kind


def catalog() -> list[dict]:
    """Every registered model, checked without building it: ``name``, ``kind`` (``"model"``), ``source``,
    ``present`` (whether its pretrained weights are at hand; for the trained MLPs, whether they are cached) and
    ``description`` (the rows of ``sigmadelta data``, with :func:`sigmadelta.data.catalog`)."""
    return [dict(name=spec.name, kind="model", source=spec.source, present=bool(spec.present()),
                 description=spec.description) for spec in _REGISTRY.values()]


def get(name: str, weights: str | os.PathLike | None = None, pretrained: bool = True, *,
        progress: bool = True) -> ModelBundle:
    """A network by name, with its preprocessing and class names.

    Args:
        name: one of :func:`names`: ``"mnist-mlp"``, ``"mnist-mlp-wide"``, ``"efficientnet-lite0"``, ``"vgg19"``.
        weights: a state_dict file to load instead of the model's own weights (required for ``"vgg19"``, whose
            ImageNet weights ship with no package: the torchvision file ``vgg19-dcbb9e9d.pth``).
        pretrained: ``False`` for random (seeded) weights; then ``weights`` must be ``None``.
        progress: show a progress bar when the model has to be trained first (the MNIST MLPs).

    Raises:
        UnknownNameError: an unknown name (a ``KeyError``); the message lists the known ones.
        WeightsError: a weights file that does not fit the architecture; the message lists the mismatched keys.
    """
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown model {name!r}; the known models are {names()}")
    if weights is not None and not pretrained:
        raise ValueError("pass either weights=PATH or pretrained=False, not both")
    bundle = _REGISTRY[name].build(weights=weights, pretrained=pretrained, progress=progress)
    bundle.model.eval()
    return bundle


def load_weights(model: nn.Module, path: str | os.PathLike, what: str) -> None:
    """Load a state_dict file into ``model`` strictly, explaining any mismatch key by key.

    Accepts a bare state_dict or a checkpoint dict holding one under ``"state_dict"`` or ``"model"``. Files are
    read with ``weights_only=True``: a weights file cannot run code.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingFileError(f"no weights file {path} for {what}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and unpickler errors vary by torch version; their advice is not repeated
        raise WeightsError(f"cannot read {path} as weights for {what}: expected a file written by "
                           f"torch.save(model.state_dict(), path), found {what_file(path, e)}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a dict of tensors) for {what}")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label} ({len(keys)}): {_first(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
        raise WeightsError(f"{path} does not fit the architecture of {what}: " + "; ".join(parts))
    model.load_state_dict(state)


def _first(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")

