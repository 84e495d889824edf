"""Fine-tune a converted network's weights and scales for the Sigma-Delta cost (beyond the paper).

The paper learns only the scales of a fixed network and names training the weights as future work. Here the
converted network (BatchNorm folded) is trained, weights and log-scales together, so that its Rounding network
(equal to its Sigma-Delta network, paper-notes 4) matches the **original** model's outputs while its
Sigma-Delta cost on consecutive frames is penalised. Per step, over ``B`` windows of ``T`` consecutive frames:

.. math::

    L = \\frac{1}{TB} \\sum_{t,b} \\mathrm{KL}\\big(p(y_{t,b}) \\,\\|\\, p(\\hat y_{t,b})\\big)
        + λ_s \\, \\frac{1}{(T-1)B} \\sum_l \\sum_{t \\ge 2} \\sum_{b,i} k_l\\,|x_{l,t,b,i} - x_{l,t-1,b,i}|
          \\, \\mathrm{fanout}_{l,i}

``y`` is the original network's output (computed once, before training: the teacher never changes), ``ŷ`` the
Rounding network's with straight-through rounding ``s = kx + stopgrad(round(kx) − kx)`` (the quantizer's own
STE: the gradient reaches both the scales and, through ``x``, every earlier weight), ``x_l`` the input of
quantizer ``l`` and ``λ_s`` λ ramped linearly from 0 over the first ``lam_warmup`` of the steps. The cost is
the surrogate of the Sigma-Delta additions per frame (``surrogate="rounded"``: ``|Δ round_ste(k x)|`` instead;
``surrogate="events"``: ``tanh(k|Δx| / (1 + h))``, the messages, about one per ``1 + h`` levels moved and at most one
per unit and frame, so that a unit that moves far costs one event as in the peers' accounting), and,
unlike :func:`~sigmadelta.optimize_scales`, it is *not* local: its gradient also moves the weights, which is
the point (activations that change little from frame to frame). λ is per frame, independent of the batch.

With a hysteresis scheme (``FinetuneConfig.scheme``) the network trained is the Sigma-Delta network with
hysteresis ``h`` itself (:func:`sigmadelta.core.functional.hysteresis_levels`; straight-through on its levels), each
window a stream from zero state: its levels depend on the previous frame's, so it has no frame-by-frame Rounding
network. With ``h = 0`` this is the paper's training above, exactly (tested). The network keeps the scheme;
with ``allocate_bands`` its ``h`` is first spread across the quantizers by output sensitivity
(:func:`sigmadelta.allocate_bands`), and each quantizer keeps its own.

Why KL(original ‖ network) (``error="distill-kl"``, the distillation loss): it weighs every class by the
original's probability, so the runner-up classes that decide top-5 agreement keep their gradient; L2 on
probabilities (``error="l2-softmax"``, the paper's VGG loss) vanishes where the original is confident.

Data-parallel: under ``torchrun`` (``torch.distributed`` initialised, :func:`init_distributed`), every process
draws the same global batch and trains on its share; the network is wrapped in DDP, which averages gradients,
so the run equals one process with the same global batch (to float rounding).

>>> import torch, sigmadelta
>>> from sigmadelta.config import FinetuneConfig
>>> from sigmadelta.learn.finetune import finetune
>>> model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 6))
>>> clip = torch.rand(20, 2, 6).cumsum(0) / 20       # (T, B, features): slowly drifting
>>> result = finetune(net, clip, 1e-3, FinetuneConfig(steps=5, window=4, batch=2), progress=False)
>>> len(result.record["loss"])
5
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .._utils.cache import cache_file
from .._utils.digest import digest
from .._utils.distributed import float_path, process_rank_and_count
from ..config import FinetuneConfig
from ..core.functional import HYSTERESIS, round_ste
from ..errors import FinetuneError
from ..files.checkpoints import apply_checkpoint, save_checkpoint
from ..net import SigmaDeltaNet
from ..recipes import FINETUNE_TRAIN
from .allocation import configure_scheme
from .calibrate import network_digest
from .minibatches import original_outputs
from .objective import QuantizerTaps, distill_loss, input_fanouts, unit_cost

__all__ = ["FinetuneResult", "finetune", "finetune_cached", "Finetuned", "training_clips", "ALLOCATION_FRAMES"]


@dataclass
class FinetuneResult:
    """What a run did. ``record`` holds per step: ``loss``, ``error`` (distillation), ``cost`` (surrogate
    per frame), ``lam`` (λ after warm-up); and ``seconds``, ``world_size``."""

    config: FinetuneConfig
    lam: float
    record: dict = field(default_factory=dict)
    steps_done: int = 0


# ---------------------------------------------------------------------------------------------------------
# data: clips, windows and the teacher


def _clips(net: SigmaDeltaNet, frames, window: int) -> list[torch.Tensor]:
    """``frames`` as a list of clips ``[T_i, B_i, ...]``, each checked against the net and the window."""
    clips = [frames] if isinstance(frames, torch.Tensor) else list(frames)
    if not clips:
        raise FinetuneError("finetune: no training clips")
    for i, c in enumerate(clips):
        want = f"[T, B, {', '.join(map(str, net.sample_shape))}] {net.dtype}"
        if not isinstance(c, torch.Tensor) or c.dim() != 2 + len(net.sample_shape) or \
                tuple(c.shape[2:]) != net.sample_shape or c.dtype != net.dtype:
            got = f"{tuple(c.shape)} {c.dtype}" if isinstance(c, torch.Tensor) else type(c).__name__
            raise FinetuneError(f"finetune: training clip {i} is {got}; expected {want}")
        if len(c) < window:
            raise FinetuneError(f"finetune: training clip {i} has {len(c)} frames, fewer than window={window}")
    return clips


@torch.no_grad()
def _teacher(net: SigmaDeltaNet, clips: list[torch.Tensor], chunk: int = 64) -> list[torch.Tensor]:
    """The original network's outputs ``[T_i, B_i, classes]`` for every clip (the net, unmodified, as original)."""
    with net.configured(mode="original"):
        return [original_outputs(net, c.flatten(0, 1), chunk).unflatten(0, c.shape[:2]) for c in clips]


def _windows(clips: list[torch.Tensor], cfg: FinetuneConfig, step: int) -> list[tuple[int, int, int]]:
    """The global batch of step ``step``: ``cfg.batch`` windows ``(clip, stream, first frame)``, uniform over
    all windows of all clips, drawn from a generator seeded by (seed, step): resuming redraws the same ones."""
    sizes = torch.tensor([(len(c) - cfg.window + 1) * c.shape[1] for c in clips])
    ends = sizes.cumsum(0)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    picks = torch.randint(int(ends[-1]), (cfg.batch,), generator=g)
    out = []
    for p in picks.tolist():
        i = int(torch.searchsorted(ends, p, right=True))
        local = p - (int(ends[i - 1]) if i else 0)
        out.append((i, local % clips[i].shape[1], local // clips[i].shape[1]))
    return out


def _gather(clips, teacher, picks, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``[T, b, ...]`` and teacher outputs ``[T, b, classes]`` of the picked windows."""
    x = torch.stack([clips[i][t:t + window, b] for i, b, t in picks], 1)
    y = torch.stack([teacher[i][t:t + window, b] for i, b, t in picks], 1)
    return x, y


# ---------------------------------------------------------------------------------------------------------
# training


def _training_mode(net: SigmaDeltaNet, cfg: FinetuneConfig) -> dict:
    """The network that is trained: the Rounding network (frame by frame, equal to the paper's Sigma-Delta
    network), or for hysteresis the Sigma-Delta network itself, each window a stream from zero state, its
    increments in the model's dtype (the hysteresis levels depend on the previous frame's)."""
    if cfg.scheme.name == HYSTERESIS:
        return dict(mode="sigma-delta", counting=False, delta_dtype=net.dtype)
    return dict(mode="rounding", counting=False)


ALLOCATION_FRAMES = 32  # frames of the first training clip that allocate_bands measures on


def _start_scheme(net: SigmaDeltaNet, first_clip: torch.Tensor, cfg: FinetuneConfig) -> None:
    """Give ``net`` the scheme trained for (the net keeps it), its ``h`` spread by :func:`allocate_bands` on the
    first :data:`ALLOCATION_FRAMES` frames of the first clip when ``cfg.scheme.allocate_bands``; the paper's
    scheme leaves the net's scheme alone."""
    if cfg.scheme.name == HYSTERESIS:
        configure_scheme(net, cfg.scheme, first_clip[:ALLOCATION_FRAMES])


def _parameters(net: SigmaDeltaNet, cfg: FinetuneConfig) -> tuple[list, list]:
    weights = [m.weight for m in net.layers.values()]
    if cfg.train_biases:
        weights += [m.bias for m in net.layers.values() if m.bias is not None]
    return weights, net.scale_parameters()


def _factors(cfg: FinetuneConfig, step: int) -> tuple[float, float]:
    """(λ factor, learning-rate factor) at ``step``: the λ warm-up and the learning-rate decay."""
    warm = cfg.lam_warmup * cfg.steps
    lam_f = 1.0 if warm <= 0 else min(1.0, step / warm)
    lr_f = 1.0 if cfg.lr_decay == "constant" else 0.5 * (1 + math.cos(math.pi * step / max(cfg.steps, 1)))
    return lam_f, lr_f


def _resume(path, net, cfg, lam, optimizer, model) -> FinetuneResult | None:
    if path is None or not Path(path).is_file():
        return None
    ck = apply_checkpoint(net, path)
    saved = ck["config"]
    if saved.key() != cfg.key() or ck["lam"] != lam or ck["model"] != model:
        raise FinetuneError(f"checkpoint {path} is of another run (model {ck['model']!r}, λ {ck['lam']}, "
                            f"{saved}); remove it or pass another path")
    if ck["optimizer"] is not None:
        optimizer.load_state_dict(ck["optimizer"])
    return FinetuneResult(cfg, lam, ck["record"], ck["steps_done"])


def finetune(net: SigmaDeltaNet, frames, lam: float, config: FinetuneConfig | None = None, *, model: str = "",
             checkpoint=None, progress: bool = True) -> FinetuneResult:
    """Train ``net``'s weights and scales for the Sigma-Delta cost, distilling from its original network.

    ``net`` must hold the original model's weights when called (they are the teacher); it keeps the trained
    weights, scales and scheme. Training starts from its current scales (learn them first, e.g. with
    :func:`sigmadelta.learn.calibrate.calibrate`). The objective: the module docstring.

    Args:
        net: a converted network (any mode; restored afterwards, which resets state).
        frames: a clip ``[T, B, ...]`` (``B`` streams) or a list of clips; windows never cross clips.
        lam: λ ≥ 0, per frame.
        config: a :class:`FinetuneConfig` (default settings if ``None``).
        model: the model's name, stored in checkpoints.
        checkpoint: a path: saved every ``config.checkpoint_every`` steps and at the end (process 0), and
            resumed from if it exists (same model, λ and config, else an error).
        progress: show a progress bar.

    Returns:
        The :class:`FinetuneResult`.
    """
    cfg = FinetuneConfig() if config is None else config
    if not isinstance(cfg, FinetuneConfig):
        raise FinetuneError(f"config must be a FinetuneConfig, got {type(cfg).__name__}")
    if not (isinstance(lam, (int, float)) and math.isfinite(lam) and lam >= 0):
        raise FinetuneError(f"finetune: λ must be finite and >= 0, got {lam!r}")
    rank, world = process_rank_and_count()
    if cfg.batch % world:
        raise FinetuneError(f"finetune: batch={cfg.batch} does not split over {world} processes")
    clips = _clips(net, frames, cfg.window)
    teacher = _teacher(net, clips)  # before any checkpoint changes the weights
    requires_grad = {id(p): p.requires_grad for p in net.graph_module.parameters()}
    weights, scales = _parameters(net, cfg)
    for p in weights + scales:  # κ always records a gradient: the quantizer's STE rounding keys on it
        p.requires_grad_(True)
    optimizer = torch.optim.Adam([dict(params=weights, lr=cfg.lr_weights), dict(params=scales, lr=cfg.lr_scales)])
    taps = None
    try:
        resumed = _resume(checkpoint, net, cfg, float(lam), optimizer, model)  # scheme and h as checkpointed
        result = resumed or \
            FinetuneResult(cfg, float(lam), dict(loss=[], error=[], cost=[], lam=[], seconds=0.0, world_size=world))
        fanout = input_fanouts(net, clips[0][0, :1])
        if resumed is None:
            _start_scheme(net, clips[0], cfg)
        with net.configured(**_training_mode(net, cfg)):  # restores mode, counting and dtype
            net.reset()
            taps = QuantizerTaps(net)
            module = net.graph_module
            if world > 1:
                from torch.nn.parallel import DistributedDataParallel

                module = DistributedDataParallel(net.graph_module, broadcast_buffers=False)
            step = _Step(net, module, taps, fanout, optimizer, clips, teacher, cfg, float(lam), rank, world)
            _loop(step, result, checkpoint, model, progress and rank == 0)
    finally:
        if taps is not None:
            taps.remove()
        for p in net.graph_module.parameters():
            p.requires_grad_(requires_grad[id(p)])
            p.grad = None
    if checkpoint is not None and rank == 0:
        _save(checkpoint, net, result, model, optimizer)
    return result


@dataclass
class _Step:
    """What one optimizer step needs; ``__call__(i)`` runs step ``i`` and returns (loss, error, cost, λ_i)."""

    net: SigmaDeltaNet
    module: torch.nn.Module  # the graph module, or its DDP wrapper
    taps: QuantizerTaps
    fanout: dict
    optimizer: torch.optim.Optimizer
    clips: list
    teacher: list
    cfg: FinetuneConfig
    lam: float
    rank: int
    world: int

    def __call__(self, i: int) -> tuple[float, float, float, float]:
        cfg, opt = self.cfg, self.optimizer
        lam_f, lr_f = _factors(cfg, i)
        for group, lr in zip(opt.param_groups, (cfg.lr_weights, cfg.lr_scales)):
            group["lr"] = lr * lr_f
        share = cfg.batch // self.world  # every process draws the global batch and takes its share
        picks = _windows(self.clips, cfg, i)[self.rank * share:(self.rank + 1) * share]
        x, y = _gather(self.clips, self.teacher, picks, cfg.window)  # (T, b, ...), (T, b, classes)
        self.net.prepare_steps(cfg.window)  # (the rounding network ignores it)
        out = self.module(x.flatten(0, 1))
        self.net.reset()  # every window is a stream of its own: no state carried to the next
        error = distill_loss(out, y.flatten(0, 1), cfg)
        cost = _surrogate_cost(self.net, self.taps.inputs, self.fanout, cfg)
        loss = error + self.lam * lam_f * cost
        opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP: gradients averaged over the processes
        params = [p for g in opt.param_groups for p in g["params"]]
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        self.taps.inputs.clear()
        if not all(torch.isfinite(p).all() for p in params):
            raise FloatingPointError(f"finetune: parameters diverged at step {i}; lower the learning rates")
        return loss.item(), error.item(), float(torch.as_tensor(cost).detach()), self.lam * lam_f


def _loop(step: _Step, result: FinetuneResult, checkpoint, model: str, progress: bool) -> None:
    cfg, rec = step.cfg, result.record
    bar = tqdm(total=cfg.steps, initial=result.steps_done, disable=not progress, desc=f"finetune λ={step.lam:g}")
    start = time.perf_counter() - rec["seconds"]
    try:
        for i in range(result.steps_done, cfg.steps):
            for key, v in zip(("loss", "error", "cost", "lam"), step(i)):
                rec[key].append(v)
            result.steps_done = i + 1
            rec["seconds"] = time.perf_counter() - start
            bar.update()
            bar.set_postfix(error=f"{rec['error'][-1]:.3g}", kops=f"{rec['cost'][-1] / 1e3:.4g}", refresh=False)
            if checkpoint is not None and step.rank == 0 and (i + 1) % cfg.checkpoint_every == 0:
                _save(checkpoint, step.net, result, model, step.optimizer)
    finally:
        bar.close()


def _surrogate_cost(net: SigmaDeltaNet, inputs: dict[str, torch.Tensor], fanout: dict, cfg: FinetuneConfig
                    ) -> torch.Tensor:
    """The surrogate cost per frame, mean over the ``(T − 1)·b`` frame pairs of the windows:
    ``Σ_l Σ_i c(k_l Δx_{l,i}) fanout_{l,i}`` (:func:`~sigmadelta.learn.objective.unit_cost`; ``cfg.surrogate``;
    ``h_l`` the quantizer's hysteresis, 0 without)."""
    h = net.scheme_params if net.scheme == HYSTERESIS else {}
    total = 0.0
    for q, mod in net.quantizers.items():
        x = inputs[q].unflatten(0, (cfg.window, -1))  # (T, b, ...)
        k = mod.log_scale.exp().to(x.dtype)
        dx = round_ste(k * x).diff(dim=0) if cfg.surrogate == "rounded" else (k * x).diff(dim=0)
        per_unit = unit_cost(dx, cfg.surrogate, h.get(q, 0.0))
        total = total + (per_unit * fanout[q]).sum() / (dx.shape[0] * dx.shape[1])
    return total


def _save(path, net: SigmaDeltaNet, result: FinetuneResult, model: str, optimizer=None, meta=None) -> None:
    save_checkpoint(path, net, model=model, config=result.config, lam=result.lam, record=result.record,
                    steps_done=result.steps_done, optimizer=optimizer, meta=meta)


# ---------------------------------------------------------------------------------------------------------
# training data, and runs cached by content


def training_clips(bundle, train=None) -> tuple[list[torch.Tensor], list[str]]:
    """The training clips and their names: Temporal-MNIST's training split for the MNIST MLPs; for image models
    the clips ``train`` names (bundled clip names, video files, ``"synthetic"``; default
    :data:`sigmadelta.recipes.FINETUNE_TRAIN`)."""
    from .. import data

    if bundle.kind == "mnist":
        if train:
            raise FinetuneError(f"training clips are for image models; {bundle.name} trains on Temporal-MNIST's "
                                "training split")
        return [data.mnist_clip("train", temporal=True)[0]], ["temporal-mnist train"]
    from ..data.synthetic import training_set

    for clip in train or ():
        if clip != "synthetic" and clip not in data.CLIPS and not Path(clip).is_file():
            raise FinetuneError(f"training clip {clip!r} is neither 'synthetic', a bundled clip "
                                f"({', '.join(sorted(data.CLIPS))}) nor a video file")
    return training_set(bundle, train or FINETUNE_TRAIN)


@dataclass
class Finetuned:
    """A checkpoint that :func:`finetune_cached` trained or found: its path, whether cached, λ and record."""

    path: Path
    cached: bool
    lam: float
    record: dict


def finetune_cached(net: SigmaDeltaNet, clips, lam: float, config: FinetuneConfig | None = None, *, model: str,
                    output=None, meta: dict | None = None, progress: bool = True) -> Finetuned:
    """:func:`finetune`, writing the result to ``output``, or to the user cache keyed by content.

    Without ``output`` the key is the net's weights and initial scales, the clips' frames, λ, the config and the
    float path (torch's threads and the processes, :func:`~sigmadelta._utils.distributed.float_path`):
    a run already in the cache is loaded into ``net`` instead of trained. Intermediate checkpoints go to
    ``<file>.partial`` (an interrupted run resumes from it) and the final file is written once, atomically.
    """
    cfg = FinetuneConfig() if config is None else config
    clips = [clips] if isinstance(clips, torch.Tensor) else list(clips)
    if output is None:
        key = digest(network_digest(net), float(lam), cfg.key(), float_path(),
                     *[q.log_scale for q in net.quantizers.values()], *clips)
        output = cache_file("finetune", model, lam, key, ".pt")
        if output.is_file():
            ck = apply_checkpoint(net, output, model)
            return Finetuned(output, True, ck["lam"], ck["record"])
    output = Path(output)
    partial = output.with_name(output.name + ".partial")
    result = finetune(net, clips, lam, cfg, model=model, checkpoint=partial, progress=progress)
    if process_rank_and_count()[0] == 0:
        _save(output, net, result, model, meta=meta)
        partial.unlink(missing_ok=True)
    return Finetuned(output, False, result.lam, result.record)
