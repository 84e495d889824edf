"""Learn a converted network's scales: trade output error against computation (paper section 4).

For each λ, plain SGD on the log-scales κ (``k = exp(κ)``) minimises, per minibatch of ``R`` samples,

.. math::

    L(κ) = \\frac{1}{R} \\sum_{b} e(\\hat y_b, y_b)
           + λ \\sum_l \\sum_{b} \\sum_i |k_l x_{l,b,i}| \\, \\mathrm{fanout}_{l,i}

where ``y`` is the original network's output (no labels), ``ŷ`` the rounding network's, and ``x_l`` the input of
quantizer ``l``. Rounding passes gradients straight through (``s = kx + stopgrad(round(kx) − kx)``). The cost term
is *local*: ``x_l`` is held constant in it, so ``∂/∂κ_l`` of layer ``l``'s cost is ``k_l Σ|x_l|·fanout_l`` and no
other scale sees it. ``cost="sigma_delta"`` replaces ``|k x_t|`` by ``|k (x_t − x_{t−1})|`` on clips.

Several λ are trained at once (:func:`optimize_scales_sweep`): the minibatch is repeated once per λ and each
copy runs with its own scales, which is exact, since the copies share nothing but the (fixed) weights.

**λ normalization.** ``normalization="paper"`` (default) sums ``C`` over the minibatch and averages the
error, as the reference code did, so the paper's λ values mean what they meant there, *at the paper's
batch size*: the effective trade-off is ``λ·R``. ``normalization="mean"`` averages ``C`` too
(``λ_mean = λ_paper · R`` gives the same objective), so λ does not depend on the batch size.

**Sigma-delta cost** (``cost="sigma_delta"``, beyond the paper): ``data`` are clips and
``C = Σ_l Σ_{t,b,i} k_l |x_{l,t,b,i} − x_{l,t−1,b,i}| fanout_{l,i}``, the surrogate of the sigma-delta
network's additions. The error term is unchanged, since the sigma-delta network's output equals the rounding
network's (paper-notes section 4): the forward pass runs frame-wise in rounding mode, which gives the same
value and gradient at a fraction of the cost. A tensor ``[T, B, ...]`` is one long stream of ``B`` streams
cut into windows of ``batch_size`` steps; the stream carries over between windows (the first frame of a
window is differenced against the last of the previous one, recomputed with the current scales), and only
the very first frame is differenced against zero. An iterable of clips holds independent clips, each
starting from zero state (its first frame costs what the rounding network pays), as
:meth:`SigmaDeltaNet.run` after :meth:`~SigmaDeltaNet.reset` would count them. Evaluations run the real
sigma-delta network.

**Data-parallel.** Under ``torchrun`` (a process group joined, e.g. with
:func:`sigmadelta._utils.distributed.init_distributed`) every process builds the same minibatches and runs its share of each
(:func:`sigmadelta.learn.minibatches.share`: samples, or streams, or time steps each with the step before it as Δ
reference); the error terms and the costs add up over rows, so the all-reduced gradient is the one-process gradient
and the learned scales equal one process's with the same ``batch_size`` (to the order of summation; tested). Each
minibatch is one process's work when it has one row, as in the paper's video recipe (one frame): scaling out pays
from ``batch_size`` ≥ the number of processes. Evaluations run whole on every process. ``noise="uniform"`` draws
each process's own noise.

**Speed.** Time grows with (number of λ) × (samples per epoch); the per-step overhead is amortised by
training several λ at once (:func:`optimize_scales_sweep`) or by larger batches. For small networks on a
shared CPU, ``num_threads=1`` is often several times faster than torch's default.

>>> import torch, sigmadelta
>>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 8))
>>> x = torch.randn(40, 8)
>>> history = sigmadelta.optimize_scales(net, x, lam=1e-3, error="l2", lr=0.01, epochs=2, progress=False)
>>> [e.epoch for e in history.evaluations]
[0, 1, 2]
>>> sweep = sigmadelta.optimize_scales_sweep(net, x, [1e-4, 1e-2], error="l2", epochs=2, progress=False)
>>> sweep[0].final.ops_per_sample > sweep[1].final.ops_per_sample
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.func import functional_call
from tqdm.auto import tqdm

from .._utils.distributed import process_rank_and_count
from .._utils.threads import torch_threads
from ..config import ConfigError, ScaleConfig
from . import minibatches
from ..core.losses import ERRORS, ErrorFn, error_terms, per_sample
from ..net import SigmaDeltaNet
from .objective import input_fanouts, unit_cost

__all__ = ["optimize_scales", "optimize_scales_sweep", "History", "Evaluation", "ERRORS", "error_terms",
           "ScaleConfig"]


# ---------------------------------------------------------------------------------------------------------
# results


@dataclass
class Evaluation:
    """One evaluation of the discretized network (real rounding, no noise) on the evaluation data.

    Attributes:
        epoch: epochs trained so far (0: the initial scales).
        scales: quantizer name -> ``k`` (a float, or a list for per-channel scales).
        rel_error: the paper's error, ``Σ|ŷ − y| / Σ|y|`` over all outputs.
        error: the training error measure, mean per sample.
        ops_per_sample: additions per sample (``rounding``) or per frame (``sigma_delta``), from
            :meth:`SigmaDeltaNet.op_counts`.
        ops_per_layer: layer name -> additions per sample.
        train_error: mean error term over the epoch's minibatches (``None`` at epoch 0).
        train_ops: mean surrogate additions per sample ``Σ k|x|·fanout`` over the epoch (``None`` at epoch 0).
    """

    epoch: int
    scales: dict[str, float | list]
    rel_error: float
    error: float
    ops_per_sample: float
    ops_per_layer: dict[str, float]
    train_error: float | None = None
    train_ops: float | None = None


@dataclass
class History:
    """Evaluations of one λ's run, epoch 0 (initial scales) first."""

    lam: float
    error: str
    cost: str
    normalization: str
    evaluations: list[Evaluation] = field(default_factory=list)
    config: dict = field(default_factory=dict)  # ScaleConfig.to_dict() of the run, with this λ

    @property
    def final(self) -> Evaluation:
        return self.evaluations[-1]

    @property
    def epochs(self) -> list[int]:
        return [e.epoch for e in self.evaluations]

    @property
    def rel_errors(self) -> list[float]:
        return [e.rel_error for e in self.evaluations]

    @property
    def ops(self) -> list[float]:
        return [e.ops_per_sample for e in self.evaluations]


# ---------------------------------------------------------------------------------------------------------
# public entry points


def optimize_scales(net: SigmaDeltaNet, data, lam: float | None = None, error: str | ErrorFn | None = None, *,
                    config: ScaleConfig | None = None, eval_data=None, num_threads: int | None = None,
                    progress: bool = True, callback: Callable[[History], None] | None = None,
                    **settings) -> History:
    """Learn the scales of ``net`` for one trade-off ``lam``; the net keeps the learned scales.

    Starting from the net's current scales (``k = 1`` after :func:`~sigmadelta.convert`), minimises with plain
    SGD on κ = log k (no momentum; minibatches in data order), per minibatch of ``R`` samples,

    .. math::

        L = \\frac{1}{R}\\sum_{b=1}^{R} e(\\hat y_b, y_b) + λ \\, C, \\qquad
        C = \\sum_l \\sum_{b=1}^{R} \\sum_i k_l |x_{l,b,i}| \\, \\mathrm{fanout}_{l,i}

    ``ŷ`` is the rounding network's output with ``s = kx + stopgrad(round(kx) − kx)`` (or ``kx + u``,
    ``u ~ U(−½, ½)``, with ``noise="uniform"``), ``y`` the original network's output (computed once, no
    labels). In ``C`` the quantizer inputs ``x_l`` are constants: each κ_l sees only its own layer's cost. With
    per-channel scales each channel's κ sees only its own channel's cost.

    The module docstring says how λ is normalized, what the sigma-delta cost is and what the time grows with.
    Every setting of the objective and the optimiser lives in one validated :class:`~sigmadelta.ScaleConfig`:
    pass ``config=``, or its fields as keywords (``lr=0.01, epochs=5``), which override ``config``'s; ``lam`` and
    ``error`` may also be given positionally. The config of each run is kept in :attr:`History.config`.

    Args:
        net: a converted network. Its mode is restored afterwards, which resets its state.
        data: ``cost="rounding"``: a tensor ``[N, ...]`` (cut into minibatches of ``batch_size``) or an iterable
            of minibatches ``[B, ...]``; ``cost="sigma_delta"``: a tensor ``[T, B, ...]`` or an iterable of clips
            ``[T, B, ...]``. Tuples (``(x, label)``) are reduced to their first element.
        lam: the trade-off λ ≥ 0 (or ``config.lam``).
        error: a name from :data:`ERRORS` (``"kl"`` expects logits; see :func:`error_terms`) or a callable (or
            ``config.error``).
        config: the :class:`~sigmadelta.ScaleConfig` (lr, epochs, batch_size, cost, noise (``"uniform"``: seed
            with ``torch.manual_seed``; evaluations always round), normalization, eval_every, eval_batch_size,
            init_scale); default ``ScaleConfig()``.
        eval_data: data to evaluate on, shaped like ``data``; default ``data``.
        num_threads: torch CPU threads for the run, restored afterwards; ``None`` leaves torch's setting.
        progress: show a tqdm progress bar.
        callback: called as ``callback(history)`` after each evaluation.
        **settings: fields of :class:`~sigmadelta.ScaleConfig`, overriding ``config``'s.

    Returns:
        The :class:`History` of evaluations.
    """
    config = _config(config, lam, error, settings)
    if config.lam is None:
        raise ConfigError("optimize_scales needs λ: pass lam or config.lam")
    (history,) = _optimize(net, data, [config.lam], config, _Run(eval_data, num_threads, progress, callback),
                           keep=True)
    return history


def optimize_scales_sweep(net: SigmaDeltaNet, data, lams: Sequence[float], error: str | ErrorFn | None = None, *,
                          config: ScaleConfig | None = None, eval_data=None, num_threads: int | None = None,
                          progress: bool = True, callback: Callable[[History], None] | None = None,
                          **settings) -> list[History]:
    """Learn scales for several λ at once; ``net`` keeps its scales.

    Each λ gets the objective of :func:`optimize_scales` (same arguments) and sees the same minibatches in the
    same order, so each run is what :func:`optimize_scales` would do alone (to float rounding): the minibatch is
    repeated once per λ and each copy runs with its own scales. One step costs about as much as one step of a
    ``len(lams)`` times larger batch. Apply a result with ``net.set_scales(history.final.scales)``.

    Returns:
        One :class:`History` per λ, in the order given.
    """
    config = _config(config, None, error, settings)
    lams = list(lams)
    for v in lams:
        config.replace(lam=v)  # validates each λ
    if not lams:
        raise ConfigError("optimize_scales_sweep needs at least one λ")
    return _optimize(net, data, lams, config, _Run(eval_data, num_threads, progress, callback), keep=False)


def _config(config: ScaleConfig | None, lam, error, settings: dict) -> ScaleConfig:
    changes = dict(settings) | ({} if lam is None else {"lam": lam}) | ({} if error is None else {"error": error})
    return (config or ScaleConfig()).replace(**changes)


@dataclass
class _Run:
    """What a run needs besides its config: none of it changes the learned scales."""

    eval_data: object = None
    num_threads: int | None = None
    progress: bool = True
    callback: Callable[[History], None] | None = None


# ---------------------------------------------------------------------------------------------------------
# the optimisation


class _Scales:
    """The κ of ``n`` λ-copies of the net, ``[n, *scale_shape]`` per quantizer, and what the cost needs."""

    def __init__(self, net: SigmaDeltaNet, n: int, probe: torch.Tensor):
        names = {id(p): name for name, p in net.graph_module.named_parameters()}
        self.quantizers = net.quantizers
        self.param_names = {q: names[id(mod.log_scale)] for q, mod in self.quantizers.items()}
        self.kappa = {q: mod.log_scale.detach().clone().expand(n, *mod.log_scale.shape).clone().requires_grad_()
                      for q, mod in self.quantizers.items()}
        self.fanout = input_fanouts(net, probe)
        self.sample_shape = {q: tuple(f.shape) for q, f in self.fanout.items()}
        self.n = n

    def _padded(self, q: str) -> tuple[int, ...]:
        """κ's shape right-aligned with the quantizer input's sample shape, padded with ones."""
        shape = tuple(self.kappa[q].shape[1:])
        return (1,) * (len(self.sample_shape[q]) - len(shape)) + shape

    def per_row(self, m: int) -> dict[str, torch.Tensor]:
        """κ for ``n·m`` rows (λ-major), broadcastable against each quantizer's input: the net's parameters."""
        out = {}
        for q, kappa in self.kappa.items():
            pad = self._padded(q)
            out[self.param_names[q]] = kappa.reshape(self.n, 1, *pad).expand(self.n, m, *pad).reshape(self.n * m, *pad)
        return out

    def cost(self, steps: int | None, context: int) -> torch.Tensor:
        """Surrogate additions ``Σ k|x|·fanout`` (or ``Σ k|Δx|·fanout`` when ``steps`` is given), ``[n]``.

        Reads the inputs the quantizers recorded (detached), so the gradient reaches each κ_l from its own layer only.
        """
        total = 0
        for q, kappa in self.kappa.items():
            x = self.quantizers[q].observation.x  # (n·M, ...) detached
            if steps is None:
                change = x.unflatten(0, (self.n, -1))  # (n, M, ...)
            else:
                x = x.unflatten(0, (self.n, steps, -1))  # (n, T', B, ...)
                dx = x.diff(dim=1) if context else x.diff(dim=1, prepend=torch.zeros_like(x[:, :1]))
                change = dx.flatten(1, 2)  # (n, (T'−context)·B, ...)
            a = (unit_cost(change) * self.fanout[q]).sum(1)  # (n, *sample); c(k d) = k c(d): k applied below
            a = a.sum_to_size(self.n, *self._padded(q)).reshape(kappa.shape)  # one total per scale
            total = total + (kappa.exp() * a).reshape(self.n, -1).sum(1)
        return total

    def scales(self, i: int) -> dict[str, torch.Tensor]:
        return {q: kappa[i].detach().exp() for q, kappa in self.kappa.items()}


@torch.no_grad()
def _evaluate(net, items, error_fn, kind: str, epoch: int, scales: dict[str, torch.Tensor], train) -> Evaluation:
    net.set_scales(scales)
    abs_err = abs_true = err = 0.0
    rows = 0
    ops: dict[str, float] = {}

    def harvest():
        for layer, v in net.op_counts().per_layer(kind).items():
            ops[layer] = ops.get(layer, 0.0) + v

    for i, (x, target, reset) in enumerate(items):
        if reset:
            if i:
                harvest()
            net.reset()
        out = net.run(x).flatten(0, 1)  # (T·B, ...)
        abs_err += (out - target).abs().sum().item()
        abs_true += target.abs().sum().item()
        err += per_sample(error_fn(out.unsqueeze(0), target.unsqueeze(0))).sum().item()
        rows += len(out)
    harvest()
    per_layer = {layer: v / rows for layer, v in ops.items()}
    return Evaluation(epoch, {q: (k.item() if k.dim() == 0 else k.tolist()) for q, k in scales.items()},
                      abs_err / max(abs_true, 1e-300), err / rows, sum(per_layer.values()), per_layer, *train)


def _step(net, scales: _Scales, batch: minibatches.Batch, lam: torch.Tensor, error_fn, config: ScaleConfig):
    """One SGD step of every λ-copy. Returns the loss, the error terms ``[n]``, the costs ``[n]`` and ``R``.

    Under torchrun each process runs its :func:`_share` of the minibatch; the error terms (as sums over the
    process's rows / R) and costs are additive over rows, so the all-reduced sum of the gradients is the
    one-process gradient (to the order of summation)."""
    n, temporal = scales.n, config.cost == "sigma_delta"
    rows = minibatches.rows(batch, temporal)
    kappas = list(scales.kappa.values())
    lam = lam if config.normalization == "paper" else lam / rows
    rank, world = process_rank_and_count()
    share = minibatches.share(batch, temporal, rank, world)
    if share is None:  # more processes than rows: this one adds nothing
        err = ops = torch.zeros(n, dtype=net.dtype)
        grads = [torch.zeros_like(k) for k in kappas]
    else:
        frames = share.x.flatten(0, 1) if temporal else share.x  # (M, ...)
        m = len(frames)
        x = frames.expand(n, *frames.shape).reshape(n * m, *frames.shape[1:])  # (n·M, ...), λ-major
        out = functional_call(net.graph_module, scales.per_row(m), (x,)).unflatten(0, (n, m))  # (n, M, ...)
        if temporal:  # drop the context step: (n, R', ...), R' = (T' − context)·B'
            out = out.unflatten(1, share.x.shape[:2])[:, share.context:].flatten(1, 2)
        err = per_sample(error_fn(out, share.target.unsqueeze(0))).sum(1) / rows  # (n,) this share of the mean
        ops = scales.cost(len(share.x) if temporal else None, share.context)  # (n,) summed over the share
        grads = list(torch.autograd.grad((err + lam * ops).sum(), kappas))  # Σ_λ L_λ: independent
    err, ops = err.detach(), ops.detach()
    if world > 1:
        import torch.distributed as dist

        flat = torch.cat([g.reshape(-1) for g in grads] + [err, ops])
        dist.all_reduce(flat)
        parts = flat.split([g.numel() for g in grads] + [n, n])
        grads, err, ops = [p.view_as(g) for p, g in zip(parts, grads)], parts[-2], parts[-1]
    with torch.no_grad():
        for kappa, g in zip(kappas, grads):
            kappa -= config.lr * g
    return (err + lam * ops).sum(), err, ops, rows


def _epoch(net, scales: _Scales, batches: list[minibatches.Batch], lam: torch.Tensor, error_fn, config: ScaleConfig,
           bar) -> torch.Tensor:
    """One pass of training; returns the epoch's mean error term and surrogate ops per sample, ``[2, n]``."""
    sums, rows_seen = torch.zeros(2, scales.n, dtype=torch.float64), 0  # Σ error terms, Σ surrogate ops
    with net.configured(mode="rounding", counting=False, noise=config.noise):
        for batch in batches:
            loss, err, ops, rows = _step(net, scales, batch, lam, error_fn, config)
            sums += torch.stack([err * rows, ops]).double()
            rows_seen += rows
            bar.update()
            bar.set_postfix(loss=f"{loss.item() / scales.n:.4g}", refresh=False)
    return sums / rows_seen


def _optimize(net: SigmaDeltaNet, data, lams: list[float], config: ScaleConfig, run: _Run,
              keep: bool) -> list[History]:
    error_fn = error_terms(config.error)
    temporal = config.cost == "sigma_delta"
    n, chunk = len(lams), config.eval_batch_size
    saved_scales = net.scales
    if config.init_scale is not None:
        net.set_scales({name: config.init_scale for name in net.scales})
    # the dense reference simulation runs the quantizers and counts ops
    with torch_threads(run.num_threads), net.configured(backend="dense", mode="original"):
        try:
            batches = minibatches.train_batches(net, data, config.batch_size, temporal, chunk)
            items = minibatches.eval_items(net, data if run.eval_data is None else run.eval_data, temporal, chunk)
            scales = _Scales(net, n, items[0][0][0, :1])
            lam = torch.tensor(lams, dtype=net.dtype)  # (n,)
            histories = [History(float(v), config.error_name, config.cost, config.normalization,
                                 config=config.replace(lam=float(v)).to_dict()) for v in lams]

            def evaluate(epoch: int, train: torch.Tensor | None = None):  # train: (2, n) epoch means, or None
                with net.configured(mode="sigma-delta" if temporal else "rounding", counting=True):
                    for i, h in enumerate(histories):
                        terms = (None, None) if train is None else tuple(train[:, i].tolist())
                        h.evaluations.append(_evaluate(net, items, error_fn, "sigma_delta" if temporal else
                                                       "rounding", epoch, scales.scales(i), terms))
                        if run.callback is not None:
                            run.callback(h)

            evaluate(0)
            bar = tqdm(total=config.epochs * len(batches), disable=not run.progress, desc=f"scales ({n} λ)",
                       leave=False)
            for epoch in range(1, config.epochs + 1):
                train = _epoch(net, scales, batches, lam, error_fn, config, bar)
                bad = [lams[i] for i in range(n) if not all(torch.isfinite(k[i]).all() for k in scales.kappa.values())]
                if bad:
                    raise FloatingPointError(f"scales diverged at epoch {epoch} for λ = {bad}; lower lr")
                if epoch == config.epochs or (config.eval_every and epoch % config.eval_every == 0):
                    evaluate(epoch, train)
            bar.close()
        finally:
            net.set_scales(saved_scales)
    if keep:
        net.set_scales(scales.scales(0))
    return histories
