"""Learn a delta scheme's parameter per quantizer (h of hysteresis, θ of thresholds) by the λ trade-off.

The scheme's parameter moves its network discontinuously (a level moves or it does not), so it is learned by
coordinate descent on the measured objective rather than by gradients. With the scales fixed, for the frames
``x_1 … x_T`` of one stream from zero state,

.. math::

    J(p) = \\frac{1}{T} \\sum_t e(\\hat y_t(p), y_t) + λ \\, \\frac{C(p)}{T}

where ``y_t`` is the original network's output, ``ŷ_t(p)`` the Sigma-Delta network's with parameters ``p`` (one per
quantizer), ``e`` an error of :mod:`sigmadelta.core.losses` and ``C`` its ops over the stream, counted in one of
the :data:`~sigmadelta.accounting.CONVENTIONS`: ``"events"`` (2 ops per nonzero message and connection, the
``sigma_delta_muladd`` kind) or ``"additions"`` (the paper's ``|n|`` per message, ``sigma_delta``). A sweep visits the quantizers in graph order and gives each the candidate value with the
lowest ``J``, the others held; it stops after ``sweeps`` sweeps or when one changes nothing. Every trial runs the real
Sigma-Delta network (clip mode, on the net's backend), so ``J`` is exact on these frames and never rises.

>>> import torch, sigmadelta
>>> from sigmadelta.learn.scheme_search import learn_scheme_params
>>> model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 6))
>>> _ = net.set_scales({"0": 20.0, "2": 20.0})
>>> frames = torch.rand(1, 1, 6) + 0.02 * torch.randn(12, 1, 6).cumsum(0)
>>> search = learn_scheme_params(net, frames, lam=1e-3, candidates=(0.0, 1.0, 3.0), error="l2", progress=False)
>>> search.objective <= search.trace[0]["objective"], net.scheme
(True, 'hysteresis')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from .._utils.checks import per_quantizer
from ..accounting import CONVENTIONS
from ..config import SchemeConfig
from ..core.functional import HYSTERESIS, THRESHOLD
from ..core.losses import error_terms, per_sample
from ..eval.stream import run_stream
from ..net import SigmaDeltaNet

__all__ = ["SchemeSearch", "learn_scheme_params"]


@dataclass
class SchemeSearch:
    """What :func:`learn_scheme_params` found: the parameter per quantizer and its objective, error and ops per frame
    (``ops`` in the ``convention`` asked for), and one trace row per trial (quantizer, value, objective, error, ops)."""

    scheme: str
    params: dict[str, float]
    objective: float
    error: float
    ops: float
    trace: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(scheme=self.scheme, params=self.params, objective=self.objective, error=self.error, ops=self.ops,
                    trace=self.trace)


def learn_scheme_params(net: SigmaDeltaNet, frames: torch.Tensor, lam: float, *, scheme: str = HYSTERESIS,
                        candidates: Sequence[float] | Mapping[str, Sequence[float]] = (0.0, 0.5, 1.0, 2.0, 3.0),
                        start: float | Mapping[str, float] | None = None,
                        error: str = "l2-softmax", convention: str = "events", sweeps: int = 1, chunk: int = 16,
                        progress: bool = True) -> SchemeSearch:
    """Choose ``scheme``'s parameter per quantizer of ``net`` minimising ``J`` (module docstring) on ``frames``.

    Args:
        net: a converted network with its scales; it is left in ``scheme`` with the parameters found.
        frames: one stream ``[T, B, ...]`` (the training clip; never the test clips).
        lam: the trade-off λ per op in ``convention``.
        scheme: ``"hysteresis"`` (the parameter is h, in levels) or ``"threshold"`` (θ, in the input's units).
        candidates: the values tried for each quantizer, or per quantizer name (thresholds live in each input's
            units: e.g. multiples of each layer's σ).
        start: the values before the search, one or per quantizer (default: the net's own when it runs ``scheme``
            already, else each quantizer's first candidate).
        error: the error measure (:func:`sigmadelta.core.losses.error_terms`), on the network's output ``[T, B, ...]``.
        convention: how ops are counted, ``"events"`` or ``"additions"`` (:data:`~sigmadelta.accounting.CONVENTIONS`).
        sweeps: passes over the quantizers (a pass that changes nothing ends the search).
        chunk: steps per clip-mode call (memory only).
        progress: a tqdm bar over trials.

    Returns:
        A :class:`SchemeSearch`.
    """
    from tqdm.auto import tqdm

    names, tried, params = _checked(net, scheme, candidates, start, convention, sweeps, lam)
    terms = error_terms(error)
    target, _ = _outputs(net, frames, "original", chunk)

    def measure(params: dict[str, float]) -> tuple[float, float, float]:
        _set(net, scheme, params)
        out, counts = _outputs(net, frames, "sigma-delta", chunk)
        err = float(per_sample(terms(out, target)).mean())
        ops = counts.total(CONVENTIONS[convention]) / len(frames)
        return err + lam * ops, err, ops

    best = measure(params)
    trace = [dict(quantizer=None, value=None, objective=best[0], error=best[1], ops=best[2])]
    bar = tqdm(total=sweeps * sum(map(len, tried.values())), desc="scheme params", disable=not progress)
    for _ in range(sweeps):
        changed = False
        for name in names:
            for value in tried[name]:
                bar.update(1)
                if value == params[name]:
                    continue
                trial = params | {name: value}
                result = measure(trial)
                trace.append(dict(quantizer=name, value=value, objective=result[0], error=result[1], ops=result[2]))
                if result[0] < best[0]:
                    params, best, changed = trial, result, True
        if not changed:
            break
    bar.close()
    _set(net, scheme, params)
    return SchemeSearch(scheme, params, *best, trace=trace)


def _checked(net, scheme, candidates, start, convention, sweeps, lam):
    """The quantizers in graph order, the values tried for each and the start; a clear error before any run."""
    if scheme not in (HYSTERESIS, THRESHOLD):
        raise ValueError(f"learn_scheme_params: scheme {scheme!r} has no parameter; choose {HYSTERESIS!r} or "
                         f"{THRESHOLD!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"learn_scheme_params: unknown convention {convention!r}; choose from {tuple(CONVENTIONS)}")
    names = list(net.scheme_params)  # the quantizers, in graph order
    if isinstance(candidates, Mapping) and set(candidates) != set(names):
        unknown, missing = sorted(set(candidates) - set(names)), [n for n in names if n not in candidates]
        raise KeyError(f"learn_scheme_params: candidates per quantizer: unknown {unknown}, missing {missing}")
    tried = {name: [float(c) for c in (candidates[name] if isinstance(candidates, Mapping) else candidates)]
             for name in names}
    if start is None:
        start = net.scheme_params if net.scheme == scheme else {name: (tried[name] or [0.0])[0] for name in names}
    params = per_quantizer(start, names, "start")
    for name, values in tried.items():
        if not values or any(not (0 <= c < math.inf) for c in values + [params[name]]):
            raise ValueError(f"learn_scheme_params: quantizer {name!r} needs candidates (and a start) finite and >= "
                             f"0, got {values} from {params[name]}")
    if sweeps < 1 or lam < 0:
        raise ValueError(f"learn_scheme_params: need sweeps >= 1 and lam >= 0, got {sweeps}, {lam}")
    return names, tried, params


def _set(net: SigmaDeltaNet, scheme: str, params: dict[str, float]) -> None:
    net.set_scheme(net.scheme_config.replace(name=scheme, values=params) if net.scheme == scheme else
                   SchemeConfig(scheme, values=params))


def _outputs(net: SigmaDeltaNet, frames: torch.Tensor, mode: str, chunk: int):
    """``net`` run as ``mode`` on the stream: its outputs ``[T, B, ...]`` and op counts."""
    outs = []
    counts = run_stream(net, frames, (mode,), chunk=chunk, on_chunk=lambda clip, o, nets: outs.append(o[mode]))
    return torch.cat(outs), counts[mode]
