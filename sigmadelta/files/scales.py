"""Scales files: a converted network's scales and delta scheme, as JSON.

A scales file holds the model's name, its quantizers (layer names, in graph order), one scale ``k`` per quantizer
(a list for per-channel scales), the delta scheme (a :class:`~sigmadelta.config.SchemeConfig` with each quantizer's
``h`` or ``θ``), and free-form ``meta`` (how the scales were learned). Loading checks the model name, the layer names
and shapes against the network, so a file for another model never loads silently; every problem is a
:class:`~sigmadelta.errors.ScalesError` naming the file and the key. Files are written atomically.

>>> import torch, sigmadelta, tempfile, os
>>> from sigmadelta.files import scales
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 4))
>>> net.set_scales({"0": 8.0, "2": 4.0})
>>> path = os.path.join(tempfile.mkdtemp(), "scales.json")
>>> _ = scales.save_scales(path, net, model="toy")
>>> scales.load_scales(path, net, model="toy")
{'0': 8.0, '2': 4.0}
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .._utils.files import write_json
from ..config import SchemeConfig
from ..errors import ConfigError, MissingFileError, ScalesError
from ..net import SigmaDeltaNet

__all__ = ["SCALES_FORMAT", "scale_values", "scales_dict", "save_scales", "read_scales_file", "load_scales", "apply_scales"]

SCALES_FORMAT = "sigmadelta-scales/2"


def scale_values(net: SigmaDeltaNet) -> dict[str, float | list]:
    """``net``'s scales, JSON-ready: per quantizer a number (one per layer) or a list (one per channel)."""
    return {name: (float(k) if isinstance(k, float) else k.tolist()) for name, k in net.scales.items()}


def scales_dict(net: SigmaDeltaNet, model: str, meta: dict | None = None) -> dict:
    """The JSON-ready content of a scales file for ``net``'s current scales and delta scheme."""
    scales = scale_values(net)
    return {"format": SCALES_FORMAT, "model": model, "layers": list(scales), "scales": scales,
            "scheme": net.scheme_config.to_dict(), "meta": meta or {}}


def save_scales(path: str | os.PathLike, net: SigmaDeltaNet, model: str, meta: dict | None = None) -> Path:
    """Write ``net``'s scales and scheme to ``path`` as JSON, atomically (its folder is created).

    Args:
        path: the file to write.
        net: the converted network.
        model: the model's name (e.g. ``"efficientnet-lite0"``); loading checks it.
        meta: anything JSON-serialisable to keep alongside (λ, training clip, settings, ...).
    """
    return write_json(path, scales_dict(net, model, meta), indent=1)


def read_scales_file(path: str | os.PathLike) -> dict:
    """The parsed content of a scales file, its format checked (:func:`load_scales` checks it against a net);
    ``"scheme"`` is returned as a :class:`~sigmadelta.config.SchemeConfig`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no scales file {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ScalesError(f"{path} is not a scales file (invalid JSON: {e})") from None
    if not isinstance(content, dict) or content.get("format") != SCALES_FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise ScalesError(f"{path} is not a scales file of format {SCALES_FORMAT!r} (found {found!r})")
    scales = content.get("scales")
    if not isinstance(scales, dict) or not isinstance(content.get("model"), str):
        raise ScalesError(f"{path}: a scales file needs 'model' (a name) and 'scales' (name -> k)")
    for name, k in scales.items():
        problem = _scale_problem(k)
        if problem:
            raise ScalesError(f"{path}: scale {name!r} {problem}")
    try:
        content["scheme"] = SchemeConfig.from_dict(content.get("scheme", {}))
    except ConfigError as e:
        raise ScalesError(f"{path}: 'scheme': {e}") from None
    return content


_FLOAT32 = torch.finfo(torch.float32)


def _scale_problem(k) -> str | None:
    """Why ``k`` (as read from JSON) is not a scale: a number in float32's normal range, > 0, or nested lists of
    them; ``None`` if it is one."""
    if isinstance(k, list):
        if not k:
            return "is an empty list"
        problems = [p for p in map(_scale_problem, k) if p]
        if problems:
            return f"holds an entry that {problems[0]}"
        shapes = {tuple(torch.as_tensor(v, dtype=torch.float64).shape) if isinstance(v, list) else () for v in k}
        return None if len(shapes) == 1 else "is a ragged list (entries of different lengths)"
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        return f"must be a number > 0 (or a list of them), got {type(k).__name__} {k!r}"
    try:
        value = float(k)
    except OverflowError:  # an integer beyond any float
        value = math.inf
    if not (math.isfinite(value) and _FLOAT32.tiny <= value <= _FLOAT32.max):
        return (f"must be a finite number > 0 within float32's range "
                f"[{_FLOAT32.tiny:.3g}, {_FLOAT32.max:.3g}], got {k!r}")
    return None


def load_scales(path: str | os.PathLike, net: SigmaDeltaNet | None = None, model: str | None = None) -> dict:
    """Read a scales file and check it against the network it is meant for.

    Args:
        path: a file written by :func:`save_scales`.
        net: if given, the file's layers must be exactly ``net``'s quantizers, with fitting shapes.
        model: if given, the file must be for this model name.

    Returns:
        Quantizer name -> ``k`` (a float, or a list for per-channel scales), ready for ``net.set_scales``.

    Raises:
        MissingFileError: no such file.
        ScalesError: not a scales file, or one for another model or other layers; the message says which.
    """
    return dict(checked_content(path, net, model)["scales"])


def checked_content(path, net: SigmaDeltaNet | None, model: str | None) -> dict:
    """The file's content (read once), checked against ``model`` and ``net`` as :func:`load_scales` says."""
    content = read_scales_file(path)
    scales = content["scales"]
    if model is not None and content["model"] != model:
        raise ScalesError(f"{path} holds scales for model {content['model']!r}, not {model!r}")
    if net is not None:
        expected = list(net.scales)
        missing = [n for n in expected if n not in scales]
        extra = [n for n in scales if n not in net.scales]
        if missing or extra:
            raise ScalesError(f"{path} (model {content['model']!r}) does not fit this network's layers: "
                              f"{len(missing)} missing ({_first(missing)}), {len(extra)} unknown ({_first(extra)})")
        for name, k in net.scales.items():
            want = () if isinstance(k, float) else tuple(k.shape)
            got = tuple(torch.as_tensor(scales[name]).shape)
            if got != want and math.prod(got) != 1:
                raise ScalesError(f"{path}: scale {name!r} has shape {got}, the network's has {want}")
        values = content["scheme"].values
        if values is not None and set(values) != set(expected):
            raise ScalesError(f"{path}: the scheme's values name quantizers {_first(sorted(values))}, not this "
                              f"network's")
    return content


def apply_scales(net: SigmaDeltaNet, path: str | os.PathLike, model: str | None = None) -> dict:
    """Load a scales file (checked as in :func:`load_scales`) into ``net``: its scales and, when the file names one
    with its values, its delta scheme. Returns the file's ``meta``."""
    content = checked_content(path, net, model)
    scheme = content["scheme"]
    if scheme.values is not None:
        net.set_scheme(scheme)
    net.set_scales({name: torch.as_tensor(k, dtype=torch.float64) for name, k in content["scales"].items()})
    return content.get("meta", {})


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "") if items else "none"
