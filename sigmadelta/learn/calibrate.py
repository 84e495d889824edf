"""Calibration: learn a converted network's scales on a training clip the paper's way, and cache what was learned.

:func:`calibrate` learns scales as in the paper's section 4 (paper-notes 6): the Rounding network on frames of a
training clip, batch of one frame, plain SGD, L2 error on the softmax probabilities (the recipe
:data:`sigmadelta.recipes.PAPER_VIDEO`). Results are cached in the user cache as scales files
(:mod:`sigmadelta.files.scales`), keyed by the model's weights, the clip's frames, the initial scales, λ, the
settings and the float path (threads and processes, which change the rounding of the result), so the same
calibration runs once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .._utils.cache import cache_file
from .._utils.digest import digest
from .._utils.distributed import float_path, process_rank_and_count
from ..config import ScaleConfig
from ..errors import ScalesError
from ..files.scales import checked_content, save_scales, scales_dict
from ..net import SigmaDeltaNet
from ..recipes import PAPER_VIDEO
from .optimize import optimize_scales_sweep

__all__ = ["Calibration", "calibrate", "calibrate_sweep", "network_digest"]

# the config fields that key the calibration cache (with the weights, frames, initial scales and λ)
_KEY_FIELDS = ("error", "lr", "epochs", "batch_size", "noise", "normalization")


def network_digest(net: SigmaDeltaNet) -> str:
    """A short hash of a converted network's layers (names, weights, biases) and quantizer names: what its
    cached results were learned from."""
    tensors = [t for layer in net.layers.values() for t in (layer.weight, layer.bias) if t is not None]
    return digest(list(net.scales), list(net.layers), *tensors)


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

    Training starts from ``config.init_scale`` (k = 16 for :data:`~sigmadelta.recipes.PAPER_VIDEO`), or from
    ``net``'s current scales when it is ``None``. λ values already in the cache are read back; the others are
    trained together (:func:`~sigmadelta.optimize_scales_sweep`: one SGD run per λ, batched) and saved to the
    cache with their config. ``net`` keeps its scales. Under ``torchrun`` the processes train data-parallel (see
    :mod:`sigmadelta.learn.optimize`) and the first writes the cache.

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
                meta = dict(model=model, clip=clip, frames=int(len(frames)), frames_digest=digest(frames),
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
    settings = {k: v for k, v in config.to_dict().items() if k in _KEY_FIELDS} | float_path(num_threads)
    common = (network_digest(net), digest(frames), scales_dict(net, model)["scales"], settings)
    return [cache_file("scales", model, lam, digest(*common, float(lam)), ".json") for lam in lams]


def _cached(path: Path, config: ScaleConfig, net: SigmaDeltaNet, model: str) -> Calibration | None:
    try:
        content = checked_content(path, net, model)
    except (FileNotFoundError, ScalesError):
        return None  # not cached yet (or a stale file): train it
    return Calibration(config.lam, dict(content["scales"]), path, True, content.get("meta", {}))


def calibrate(net: SigmaDeltaNet, frames: torch.Tensor, lam: float, *, model: str, clip: str = "",
              config: ScaleConfig = PAPER_VIDEO, cache: bool = True, progress: bool = True,
              num_threads: int | None = None, **settings) -> Calibration:
    """Learn scales for one λ (see :func:`calibrate_sweep`), or read them from the cache, and set them in ``net``.

    The default config is the paper's VGG-19 video recipe (:data:`~sigmadelta.recipes.PAPER_VIDEO`): L2 error on the
    softmax probabilities, SGD lr 0.1, 5 epochs, one frame per minibatch, straight-through rounding, from k = 16.
    """
    (result,) = calibrate_sweep(net, frames, [lam], model=model, clip=clip, config=config, cache=cache,
                                progress=progress, num_threads=num_threads, **settings)
    net.set_scales({name: torch.as_tensor(k, dtype=torch.float64) for name, k in result.scales.items()})
    return result
