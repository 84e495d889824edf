"""Checkpoints of fine-tuning runs: a converted network's weights, biases, scales and delta scheme, with the run that
made them (:mod:`sigmadelta.learn.finetune`).

A checkpoint is a ``torch.save`` file of plain data (tensors, numbers, strings, lists, dicts), so it loads with
``torch.load(path, weights_only=True)``:

==============  ===============================================================================================
key             content
==============  ===============================================================================================
format          ``"sigmadelta-finetune/2"``
model           the model's name (``sigmadelta run --checkpoint`` builds this model)
lam, config     λ and the :class:`~sigmadelta.config.FinetuneConfig` as a dict
record          per-step loss, distillation error, surrogate cost and λ; seconds; processes
steps_done      steps trained (less than ``config["steps"]`` in an intermediate checkpoint)
layers          layer names in graph order; ``quantizers`` likewise
weights         layer -> weight (BatchNorm folded); ``biases`` layer -> bias
log_scales      quantizer -> κ (``k = exp(κ)``)
scheme          the delta scheme as a :class:`~sigmadelta.config.SchemeConfig` dict, with each quantizer's value
optimizer       Adam's state (to resume), or ``None``
meta            free-form: what it was trained on
==============  ===============================================================================================

Files are written atomically: a crash never leaves a half-written checkpoint. Every problem reading one is a
:class:`~sigmadelta.errors.CheckpointError` of one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .._utils.files import atomic_write
from .._utils.torchfile import what_file
from ..config import FinetuneConfig, SchemeConfig
from ..errors import CheckpointError, ConfigError, MissingFileError
from ..net import SigmaDeltaNet

__all__ = ["CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint", "apply_checkpoint"]

CHECKPOINT_FORMAT = "sigmadelta-finetune/2"


def save_checkpoint(path: str | os.PathLike, net: SigmaDeltaNet, *, model: str, config: FinetuneConfig, lam: float,
                    record: dict, steps_done: int, optimizer=None, meta: dict | None = None) -> Path:
    """Write ``net``'s weights, scales and scheme with the run's model name, config, λ and record, atomically.

    Loadable with ``torch.load(path, weights_only=True)``: tensors, numbers, strings, lists and dicts only.
    """
    content = dict(format=CHECKPOINT_FORMAT, model=model, lam=float(lam), config=config.to_dict(), record=record,
                   steps_done=int(steps_done), layers=list(net.layers), quantizers=list(net.quantizers),
                   weights={n: m.weight.detach().clone() for n, m in net.layers.items()},
                   biases={n: m.bias.detach().clone() for n, m in net.layers.items() if m.bias is not None},
                   log_scales={n: q.log_scale.detach().clone() for n, q in net.quantizers.items()},
                   scheme=net.scheme_config.to_dict(),
                   optimizer=None if optimizer is None else optimizer.state_dict(), meta=dict(meta or {}))
    return atomic_write(path, lambda tmp: torch.save(content, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint (``weights_only``), its format checked; ``["config"]`` is a
    :class:`~sigmadelta.config.FinetuneConfig`, ``["scheme"]`` a :class:`~sigmadelta.config.SchemeConfig` and
    ``["model"]`` names the model it is for."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no checkpoint file {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        content = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # zip, pickle and unpickler errors vary by torch version; their advice is not repeated
        raise CheckpointError(f"{path} is not a fine-tuning checkpoint: it is {what_file(path, e)}") from None
    if not isinstance(content, dict) or content.get("format") != CHECKPOINT_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise CheckpointError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT!r} (found {found!r})")
    try:
        content["config"] = FinetuneConfig.from_dict(content["config"])
        content["scheme"] = SchemeConfig.from_dict(content["scheme"])
    except (ConfigError, KeyError) as e:
        raise CheckpointError(f"{path}: its config or scheme cannot be read ({e})") from None
    return content


def apply_checkpoint(net: SigmaDeltaNet, checkpoint, model: str | None = None) -> dict:
    """Load a checkpoint's weights, biases, scales and scheme into ``net`` (checked before anything changes).

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
        raise CheckpointError(f"{where} is for model {ck['model']!r}, not {model!r}")
    if ck["layers"] != list(net.layers) or ck["quantizers"] != list(net.quantizers):
        raise CheckpointError(f"{where} (model {ck['model']!r}) does not fit this network: its layers "
                              f"{ck['layers'][:3]}... vs the network's {list(net.layers)[:3]}...")
    for name, m in net.layers.items():
        for what, t, have in (("weight", ck["weights"][name], m.weight), ("bias", ck["biases"].get(name), m.bias)):
            if (t is None) != (have is None) or (t is not None and t.shape != have.shape):
                raise CheckpointError(f"{where}: layer {name!r} {what} does not fit the network's")
    for name, q in net.quantizers.items():
        if ck["log_scales"][name].shape != q.log_scale.shape:
            raise CheckpointError(f"{where}: scale {name!r} has shape {tuple(ck['log_scales'][name].shape)}, "
                                  f"the network's {tuple(q.log_scale.shape)}")
    with torch.no_grad():
        for name, m in net.layers.items():
            m.weight.copy_(ck["weights"][name])
            if m.bias is not None:
                m.bias.copy_(ck["biases"][name])
        for name, q in net.quantizers.items():
            q.log_scale.copy_(ck["log_scales"][name])
    net.set_scheme(ck["scheme"])  # the scheme it was trained for, each quantizer's value as trained
    net.reset()
    return ck
