"""Save, load and learn a converted network's scales, and cache what was learned.

A scales file is JSON: the model's name, its quantizers (layer names, in graph order) and one scale ``k`` per
quantizer (a list for per-channel scales), plus free-form ``meta`` (how the scales were learned). Loading checks
the model name and the layer names against the network, so a file for another model never loads silently.
Files are written atomically (a temporary file, then a rename): a crash never leaves a half-written file.

:func:`calibrate` learns scales the paper's way (section 4; paper-notes 6): the Rounding network on frames of a
training clip, batch of one frame, plain SGD, L2 error on the softmax probabilities. Results are cached in the
user cache (``$SIGMADELTA_CACHE``, default ``~/.cache/sigmadelta``), keyed by the model's weights, the clip's frames,
λ, the settings and the float path (threads and processes, which change the rounding of the result), so the same
calibration runs once.

>>> import torch, sigmadelta, tempfile, os
>>> from sigmadelta import scales
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 4))
>>> net.set_scales({"0": 8.0, "2": 4.0})
>>> path = os.path.join(tempfile.mkdtemp(), "scales.json")
>>> _ = scales.save_scales(path, net, model="toy")
>>> scales.load_scales(path, net, model="toy")
{'0': 8.0, '2': 4.0}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._support import atomic_write, cache_dir, float_path, process_rank_and_count
from .config import PAPER_VIDEO, ScaleConfig  # noqa: F401  (PAPER_VIDEO: the calibration default)
from .errors import SigmaDeltaError
from .net import SCHEMES, SigmaDeltaNet
from .optimize import optimize_scales_sweep

__all__ = ["ScalesError", "SCALES_FORMAT", "PAPER_VIDEO", "INIT_SCALE", "INIT_SCALES", "init_scale", "video_config",
           "DEFAULT_LAMS", "default_lam",
           "scales_dict", "save_scales", "read_scales_file", "load_scales", "apply_scales", "net_digest",
           "DEFAULT_SCHEME_PARAMS", "default_scheme_param", "default_scheme_setting",
           "Calibration", "calibrate", "calibrate_sweep", "calibration_cache_path"]

SCALES_FORMAT = "sigmadelta-scales/1"

# Where learning starts for image models (PAPER_VIDEO.init_scale; why k = 16 and not the paper's 1: sigmadelta.config)
INIT_SCALE = PAPER_VIDEO.init_scale
# Models fed 0-255 pixels, like the paper's VGG-19, start where the paper did (SqueezeNet: Caffe inputs, 0-255
# minus the mean; from k = 1 its curve is better at every λ than from 16: experiments/oconnor2017/README.md).
INIT_SCALES = {"squeezenet1_1": 1.0}
# the config fields that key the calibration cache (with the weights, frames, initial scales and λ)
_KEY_FIELDS = ("error", "lr", "epochs", "batch_size", "noise", "normalization")


class ScalesError(SigmaDeltaError, ValueError):
    """A scales file that cannot be used: unreadable, of another format, for another model or other layers."""


# ---------------------------------------------------------------------------------------------------------
# files


def scales_dict(net: SigmaDeltaNet, model: str, meta: dict | None = None) -> dict:
    """The JSON-ready content of a scales file for ``net``'s current scales and delta scheme (``"scheme"``: its
    name and its parameter per quantizer, h or θ; files without it are the paper's scheme)."""
    scales = {name: (float(k) if isinstance(k, float) else k.tolist()) for name, k in net.scales.items()}
    return {"format": SCALES_FORMAT, "model": model, "layers": list(scales), "scales": scales, "meta": meta or {},
            "scheme": {"name": net.scheme, "params": net.scheme_params}}


def _atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_scales(path: str | os.PathLike, net: SigmaDeltaNet, model: str, meta: dict | None = None) -> Path:
    """Write ``net``'s scales to ``path`` as JSON, atomically.

    Args:
        path: the file to write (its folder is created).
        net: the converted network.
        model: the model's name (e.g. ``"efficientnet-lite0"``); loading checks it.
        meta: anything JSON-serialisable to keep alongside (λ, training clip, settings, ...).

    Returns:
        The path written.
    """
    return _atomic_write_text(Path(path), json.dumps(scales_dict(net, model, meta), indent=1) + "\n")


def read_scales_file(path: str | os.PathLike) -> dict:
    """The parsed content of a scales file, format checked; see :func:`load_scales` for the checks against a net."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no scales file {path}")
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
    scheme = content.get("scheme", {"name": "sigma-delta", "params": {}})
    if (not isinstance(scheme, dict) or scheme.get("name") not in SCHEMES or not isinstance(scheme.get("params"), dict)
            or not all(isinstance(v, (int, float)) and 0 <= v < math.inf for v in scheme["params"].values())):
        raise ScalesError(f"{path}: 'scheme' must be {{'name': one of {SCHEMES}, 'params': name -> a number >= 0}}, "
                          f"got {scheme!r}")
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
        FileNotFoundError: no such file.
        ScalesError: not a scales file, or one for another model or other layers; the message says which.
    """
    return dict(_checked_content(path, net, model)["scales"])


def _checked_content(path, net: SigmaDeltaNet | None, model: str | None) -> dict:
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
    return content


def apply_scales(net: SigmaDeltaNet, path: str | os.PathLike, model: str | None = None) -> dict:
    """Load a scales file (checked as in :func:`load_scales`) into ``net``, with its delta scheme when the file
    names one other than the paper's. Returns the file's ``meta``."""
    content = _checked_content(path, net, model)
    scheme = content.get("scheme", {"name": "sigma-delta", "params": {}})
    if scheme["name"] != "sigma-delta":
        try:
            net.set_scheme(scheme["name"], **{"h" if scheme["name"] == "hysteresis" else "theta": scheme["params"]})
        except KeyError as e:
            raise ScalesError(f"{path}: the scheme parameters do not fit this network's quantizers ({e})") from None
    net.set_scales({name: torch.as_tensor(k, dtype=torch.float64) for name, k in content["scales"].items()})
    return content.get("meta", {})


def _first(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "") if items else "none"


# ---------------------------------------------------------------------------------------------------------
# calibration with a cache


def net_digest(net: SigmaDeltaNet) -> str:
    """A short hash of a converted network's layers (names, weights, biases) and quantizer names."""
    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps(list(net.scales)).encode())
    for name, layer in net.layers.items():
        h.update(name.encode())
        for t in (layer.weight, layer.bias):
            if t is not None:
                t = t.detach().contiguous()
                h.update(f"{t.dtype}{tuple(t.shape)}".encode())
                h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _frames_digest(frames: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=8)
    t = frames.detach().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def calibration_cache_path(model: str, net_hash: str, frames_hash: str, lam: float, settings: dict,
                           init_hash: str = "") -> Path:
    """Where :func:`calibrate` caches the scales learned for this model (weights), training frames, initial
    scales, λ and settings."""
    key = json.dumps(dict(net=net_hash, frames=frames_hash, init=init_hash, lam=float(lam), **settings),
                     sort_keys=True)
    digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return cache_dir() / "scales" / f"{safe}-lam{lam:.3g}-{digest}.json"


@dataclass
class Calibration:
    """Scales learned for one λ.

    Attributes:
        lam: the trade-off λ.
        scales: quantizer name -> ``k``.
        path: the cache file holding them.
        cached: whether they came from the cache (nothing was trained).
        meta: what the file records: model, clip, λ, settings, the final evaluation on the training frames.
    """

    lam: float
    scales: dict
    path: Path
    cached: bool
    meta: dict = field(default_factory=dict)


def calibrate_sweep(net: SigmaDeltaNet, frames: torch.Tensor, lams: Sequence[float], *, model: str,
                    clip: str = "", config: ScaleConfig = PAPER_VIDEO, cache: bool = True, progress: bool = True,
                    num_threads: int | None = None, **settings) -> list[Calibration]:
    """Learn scales for several λ on training frames (the paper's protocol), reusing cached results.

    Training starts from ``config.init_scale`` (k = 16 for :data:`~sigmadelta.config.PAPER_VIDEO`), or from
    ``net``'s current scales when it is ``None``. λ values already in the cache are read back; the others are
    trained together (:func:`~sigmadelta.optimize_scales_sweep`: one SGD run per λ, batched) and saved to the
    cache with their config. ``net`` keeps its scales. Under ``torchrun`` the processes train data-parallel (see
    :mod:`sigmadelta.optimize`) and the first writes the cache.

    Args:
        net: the converted network.
        frames: training frames ``[N, ...]`` or a clip ``[T, 1, ...]`` (flattened to frames, in order).
        lams: the trade-offs λ.
        model: the model's name, stored with the scales (and part of the file name).
        clip: a label of the training frames for the record (e.g. ``"carphone"``); the cache key uses their content.
        config: how to learn (:class:`~sigmadelta.ScaleConfig`); default the paper's video recipe.
        cache: read and write the user cache; ``False`` always trains and writes nothing.
        progress: show a progress bar while training.
        num_threads: torch threads while training (``None``: torch's setting).
        **settings: fields of ``config`` to override (``lr=0.05``, ``epochs=2``, ...).

    Returns:
        One :class:`Calibration` per λ, in the order given.
    """
    config = config.replace(**settings)
    if frames.dim() == len(net.sample_shape) + 2:
        frames = frames.flatten(0, 1)  # (T, B, ...) -> (T·B, ...)
    saved = net.scales
    if config.init_scale is not None:
        net.set_scales({name: config.init_scale for name in net.scales})
    try:
        paths = _cache_paths(net, frames, lams, model, config, num_threads)
        results = [_cached(path, config.replace(lam=float(lam)), net, model) if cache else None
                   for lam, path in zip(lams, paths)]
        rank, world = process_rank_and_count()
        missing = torch.tensor([r is None for r in results], dtype=torch.int32)
        if world > 1:  # under torchrun the processes train together: all train what any of them lacks
            import torch.distributed as dist

            dist.all_reduce(missing, op=dist.ReduceOp.MAX)
        todo = missing.nonzero().flatten().tolist()
        if todo:
            histories = optimize_scales_sweep(net, frames, [float(lams[i]) for i in todo], config=config,
                                              eval_every=None, eval_data=frames[:1], num_threads=num_threads,
                                              progress=progress)
            for i, h in zip(todo, histories):
                meta = dict(model=model, clip=clip, frames=int(len(frames)), frames_digest=_frames_digest(frames),
                            lam=h.lam, init=h.evaluations[0].scales, config=h.config,
                            first_frame_rel_error=h.final.rel_error, first_frame_rounding_ops=h.final.ops_per_sample)
                net.set_scales(h.final.scales)
                results[i] = Calibration(h.lam, dict(h.final.scales), paths[i], False, meta)
                if cache and rank == 0:
                    save_scales(paths[i], net, model, meta)
    finally:
        net.set_scales(saved)
    return results  # type: ignore[return-value]


def _cache_paths(net: SigmaDeltaNet, frames: torch.Tensor, lams, model: str, config: ScaleConfig,
                 num_threads: int | None) -> list[Path]:
    """The cache file of each λ, keyed by weights, frames, initial scales (the net's now), λ, the recipe and the
    float path (threads and processes)."""
    init = json.dumps(scales_dict(net, model)["scales"])
    init_hash = hashlib.blake2b(init.encode(), digest_size=8).hexdigest()
    settings = {k: v for k, v in config.to_dict().items() if k in _KEY_FIELDS} | float_path(num_threads)
    net_hash, frames_hash = net_digest(net), _frames_digest(frames)
    return [calibration_cache_path(model, net_hash, frames_hash, lam, settings, init_hash) for lam in lams]


def _cached(path: Path, config: ScaleConfig, net: SigmaDeltaNet, model: str) -> Calibration | None:
    try:
        content = _checked_content(path, net, model)
    except (FileNotFoundError, ScalesError):
        return None  # not cached yet (or a stale file): train it
    meta = content.get("meta", {})
    meta.setdefault("config", config.to_dict())  # files cached before configs were saved: the same key, so the same
    return Calibration(config.lam, dict(content["scales"]), path, True, meta)


def calibrate(net: SigmaDeltaNet, frames: torch.Tensor, lam: float, *, model: str, clip: str = "",
              config: ScaleConfig = PAPER_VIDEO, cache: bool = True, progress: bool = True,
              num_threads: int | None = None, **settings) -> Calibration:
    """Learn scales for one λ (see :func:`calibrate_sweep`), or read them from the cache, and set them in ``net``.

    The default config is the paper's VGG-19 video recipe (:data:`~sigmadelta.config.PAPER_VIDEO`): L2 error on the
    softmax probabilities, SGD lr 0.1, 5 epochs, one frame per minibatch, straight-through rounding, from k = 16.
    """
    (result,) = calibrate_sweep(net, frames, [lam], model=model, clip=clip, config=config, cache=cache,
                                progress=progress, num_threads=num_threads, **settings)
    net.set_scales({name: torch.as_tensor(k, dtype=torch.float64) for name, k in result.scales.items()})
    return result


# The one place for each model's default λ: for image models read off the trade-off curve of `sigmadelta reproduce
# video` (see its README), the paper's for VGG-19; for the MNIST MLPs the demo's (one epoch, 16.6x at 2.09% error)
DEFAULT_LAMS = {"vgg19": 1e-11, "efficientnet-lite0": 1e-10, "squeezenet1_1": 1e-10, "mnist-mlp": 1e-8,
                "mnist-mlp-wide": 1e-8}


def init_scale(model: str) -> float:
    """Where learning the scales starts for ``model``: :data:`INIT_SCALES`, else :data:`INIT_SCALE`."""
    return INIT_SCALES.get(model, INIT_SCALE)


def video_config(model: str) -> ScaleConfig:
    """The paper's video recipe (:data:`~sigmadelta.config.PAPER_VIDEO`) for ``model``: its :func:`init_scale`."""
    return PAPER_VIDEO.replace(init_scale=init_scale(model))


def default_lam(model: str) -> float:
    """The default trade-off λ for a model: :data:`DEFAULT_LAMS`, else the paper's 1e-11."""
    return DEFAULT_LAMS.get(model, 1e-11)


# Per model and scheme, (parameter, λ of the scales): h for hysteresis, τ for threshold (θ = τ·σ of each layer's input
# on the training clip; λ None: the model's, as k is unused), read off `sigmadelta reproduce schemes`: the most events
# saved that keeps top-5 agreement >= 98% on both test clips. Other models take the first entry's parameters.
DEFAULT_SCHEME_PARAMS = {
    "squeezenet1_1": {"sigma-delta": (0.0, None), "hysteresis": (1.0, 3e-11), "threshold": (0.07, None)},
    "efficientnet-lite0": {"sigma-delta": (0.0, None), "hysteresis": (0.25, 1e-10), "threshold": (0.01, None)},
}


def default_scheme_setting(model: str, scheme: str) -> tuple[float, float]:
    """``(parameter, λ)``: the default h or τ of ``scheme`` for ``model`` and the λ of the scales it goes with
    (:data:`DEFAULT_SCHEME_PARAMS`; λ defaults to :func:`default_lam`)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose from {SCHEMES}")
    table = DEFAULT_SCHEME_PARAMS.get(model)
    param, lam = (table or next(iter(DEFAULT_SCHEME_PARAMS.values())))[scheme]
    return param, (lam if (lam is not None and table is not None) else default_lam(model))


def default_scheme_param(model: str, scheme: str) -> float:
    """The default h or τ of ``scheme`` for ``model`` (:func:`default_scheme_setting`)."""
    return default_scheme_setting(model, scheme)[0]


def __getattr__(name: str):
    if name == "CALIBRATION_DEFAULTS":  # the recipe's old spelling, before ScaleConfig
        import warnings

        warnings.warn("sigmadelta.scales.CALIBRATION_DEFAULTS is now sigmadelta.config.PAPER_VIDEO (a ScaleConfig)",
                      DeprecationWarning, stacklevel=2)
        return {k: getattr(PAPER_VIDEO, k) for k in _KEY_FIELDS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
