"""Fine-tuning checkpoints: a converted network's weights, biases and scales with the run that made them.

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

import os
import tempfile
from pathlib import Path

import torch

from .errors import SigmaDeltaError
from .net import SigmaDeltaNet

__all__ = ["CHECKPOINT_FORMAT", "FinetuneError", "save_checkpoint", "load_checkpoint", "apply_checkpoint"]

CHECKPOINT_FORMAT = "sigmadelta-finetune/1"


class FinetuneError(SigmaDeltaError, ValueError):
    """Bad fine-tuning input (config, data, checkpoint), with what and where."""


def _state(net: SigmaDeltaNet) -> dict:
    return dict(layers=list(net.layers), quantizers=list(net.quantizers),
                weights={n: m.weight.detach().clone() for n, m in net.layers.items()},
                biases={n: m.bias.detach().clone() for n, m in net.layers.items() if m.bias is not None},
                log_scales={n: q.log_scale.detach().clone() for n, q in net.quantizers.items()})


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
    """Load a checkpoint's weights, biases and scales into ``net`` (checked before anything changes).

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
    net.reset()
    return ck
