"""Allocate a delta scheme's band across layers by output sensitivity (rate-distortion), at the same predicted error.

Both schemes with memory hold each unit inside a band around its last sent value: ``|x − ref| ≤ b`` with
``b = θ`` (thresholds) or ``b = (½ + h)/k`` (hysteresis). The peers set ``θ = τ·σ`` per layer, the same fraction of
every layer's spread. This module spends the error where the output does not feel it and the messages are dear.
For quantizer ``l`` with ``n_l`` input units per frame, measured on calibration frames with the original network:

- ``g_l``: the mean of ``(∂m/∂x)²`` over its units, ``m`` the original's margin (its top logit minus the runner-up,
  what top-1 agreement turns on);
- ``a_l``: the mean ``|x_t − x_{t−1}|`` of its units from frame to frame;
- ``f_l``: its mean fan-out, in multiply-adds per unit (every layer it feeds).

An error spread uniformly over ``±b_l`` adds about ``g_l n_l b_l² / 3`` to the margin's variance; a unit drifting
``a_l`` per frame sends about ``a_l / b_l`` messages per frame, each ``f_l`` multiply-adds. Minimising the events
:math:`\\sum_l f_l n_l a_l / b_l` at a fixed predicted error :math:`E = \\sum_l g_l n_l b_l^2` gives

.. math:: b_l = c \\, (f_l a_l / g_l)^{1/3}

with ``c`` fixed by ``E`` equal to that of the bands the net had before (:func:`allocate_bands`): the same
``τ`` or ``h`` then means the same predicted error, spent differently. ``exponent`` replaces the 1/3 (the
rate model's). Hysteresis takes ``h_l = max(0, b_l k_l − ½)`` (a band cannot be narrower than rounding's).

>>> import torch, sigmadelta
>>> from sigmadelta.learn.allocation import allocate_bands
>>> model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
>>> net = sigmadelta.convert(model, torch.zeros(1, 6))
>>> frames = torch.rand(1, 1, 6) + 0.05 * torch.randn(12, 1, 6).cumsum(0)
>>> _ = net.set_scheme("threshold", tau=0.1, calibration=frames)
>>> allocation = allocate_bands(net, frames)
>>> sorted(allocation.bands) == sorted(net.scheme_params), net.scheme
(True, 'threshold')
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..accounting import fanout_map
from ..config import SchemeConfig
from ..core.functional import HYSTERESIS, THRESHOLD
from ..core.modules import ORIGINAL
from ..errors import ConfigError
from ..net import SigmaDeltaNet

__all__ = ["BandAllocation", "allocate_bands", "band_statistics", "configure_scheme"]


@dataclass
class BandAllocation:
    """What :func:`allocate_bands` did: per quantizer the band before and after (in its input's units), the
    scheme parameters set (θ or h), and the statistics ``g``, ``a``, ``f``, ``n`` it used; ``scale`` is ``c``."""

    scheme: str
    before: dict[str, float]
    bands: dict[str, float]
    params: dict[str, float]
    stats: dict[str, dict[str, float]]
    scale: float

    def predicted_error(self, bands: dict[str, float]) -> float:
        """``Σ_l g_l n_l b_l²`` of ``bands``: equal for :attr:`before` and :attr:`bands` (unless h was clipped at 0)."""
        return _predicted_error(self.stats, bands)

    def to_dict(self) -> dict:
        return dict(scheme=self.scheme, before=self.before, bands=self.bands, params=self.params, stats=self.stats,
                    scale=self.scale)


def band_statistics(net: SigmaDeltaNet, frames: torch.Tensor, chunk: int = 8) -> dict[str, dict[str, float]]:
    """Quantizer name -> ``g`` (mean squared margin gradient), ``a`` (mean |Δx| per frame), ``f`` (mean fan-out in
    multiply-adds) and ``n`` (units per frame) of its input, over ``frames [T, B, ...]`` (``T ≥ 2``), run ``chunk``
    frames at a time on an original-mode copy of ``net`` (``net`` is untouched)."""
    if not isinstance(frames, torch.Tensor) or frames.dim() < 3 or len(frames) < 2:
        raise ValueError(f"band statistics need frames [T, B, ...] with T >= 2, got "
                         f"{tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__}")
    probe = net.dense_copy(ORIGINAL)
    names = list(probe.quantizers)
    grad_sums = dict.fromkeys(names, 0.0)
    drift_sums = dict.fromkeys(names, 0.0)
    previous: dict[str, torch.Tensor] = {}
    nudges: dict[str, torch.Tensor] = {}

    def nudge(name):  # x + 0, the 0 a leaf whose gradient is ∂m/∂x
        def hook(_module, _inputs, out):
            nudges[name] = torch.zeros_like(out, requires_grad=True)
            return out + nudges[name]
        return hook

    hooks = [q.register_forward_hook(nudge(name)) for name, q in probe.quantizers.items()]
    try:
        for start in range(0, len(frames), chunk):
            clip = frames[start:start + chunk]
            with torch.enable_grad():
                logits = probe.run(clip)
                if not isinstance(logits, torch.Tensor):
                    raise TypeError(f"band statistics need a network whose output is one tensor of logits, got "
                                    f"{type(logits).__name__}")
                top = logits.topk(2, dim=-1).values
                grads = torch.autograd.grad((top[..., 0] - top[..., 1]).sum(), [nudges[n] for n in names])
            for name, grad in zip(names, grads):
                grad_sums[name] += float(grad.double().square().sum())
                x = probe.quantizers[name].observation.x.unflatten(0, (len(clip), -1)).double()
                if name in previous:
                    x = torch.cat([previous[name], x])
                drift_sums[name] += float((x[1:] - x[:-1]).abs().sum())
                previous[name] = x[-1:]
    finally:
        for hook in hooks:
            hook.remove()
    steps, streams = frames.shape[0], frames.shape[1]
    stats = {}
    for name in names:
        shape = tuple(probe.quantizers[name].observation.x.shape[1:])
        units = float(torch.Size(shape).numel())
        fanout = sum(float(fanout_map(layer, shape).mean()) for layer_name, layer in probe.layers.items()
                     if probe.layer_inputs[layer_name] == name)
        stats[name] = dict(g=grad_sums[name] / (steps * streams * units),
                           a=drift_sums[name] / ((steps - 1) * streams * units), f=fanout, n=units)
    return stats


def _predicted_error(stats: dict[str, dict[str, float]], bands: dict[str, float]) -> float:
    return sum(s["g"] * s["n"] * bands[name] ** 2 for name, s in stats.items())


def _bands_of(net: SigmaDeltaNet) -> dict[str, float]:
    """Each quantizer's band in its input's units under the scheme set."""
    if net.scheme == THRESHOLD:
        return dict(net.scheme_params)
    scales = net.scales
    if any(torch.as_tensor(k).numel() != 1 for k in scales.values()):
        raise ValueError("allocate_bands: hysteresis with per-channel scales has a band per channel; allocate with "
                         "one scale per layer")
    return {name: (0.5 + h) / float(scales[name]) for name, h in net.scheme_params.items()}


def allocate_bands(net: SigmaDeltaNet, frames: torch.Tensor, *, exponent: float = 1 / 3,
                   chunk: int = 8) -> BandAllocation:
    """Re-spread the bands of ``net``'s scheme (``"threshold"`` or ``"hysteresis"``, set first) across its quantizers
    as ``b_l ∝ (f_l a_l / g_l)^exponent`` at the same predicted error (module docstring), measured on ``frames
    [T, B, ...]``; sets the new θ or h in ``net`` and returns a :class:`BandAllocation`."""
    if net.scheme not in (THRESHOLD, HYSTERESIS):
        raise ValueError(f"allocate_bands: scheme {net.scheme!r} has no band; set {THRESHOLD!r} or {HYSTERESIS!r} "
                         "first (net.set_scheme)")
    if not 0 < exponent <= 1:
        raise ValueError(f"allocate_bands: exponent must be in (0, 1], got {exponent}")
    before = _bands_of(net)
    stats = band_statistics(net, frames, chunk)
    flat = [name for name, s in stats.items() if s["g"] <= 0 or s["a"] <= 0]
    if flat:
        raise ValueError(f"allocate_bands: quantizers {flat[:4]} see no margin gradient or no change on these frames; "
                         "calibrate on frames that move")
    shape = {name: (s["f"] * s["a"] / s["g"]) ** exponent for name, s in stats.items()}
    c = (_predicted_error(stats, before) / _predicted_error(stats, shape)) ** 0.5
    bands = {name: c * v for name, v in shape.items()}
    if net.scheme == THRESHOLD:
        params = dict(bands)
    else:
        scales = net.scales
        params = {name: max(0.0, b * float(scales[name]) - 0.5) for name, b in bands.items()}
    net.set_scheme(net.scheme_config.replace(values=params, allocate_bands=True))
    return BandAllocation(net.scheme, before, bands, params, stats, c)


def configure_scheme(net: SigmaDeltaNet, config: SchemeConfig, calibration: torch.Tensor | None = None
                     ) -> BandAllocation | None:
    """Set ``net``'s delta scheme to what ``config`` says: its ``values`` per quantizer if it has them; else its
    ``param`` (``τ`` times each quantizer's input σ on ``calibration [T, B, ...]`` for thresholds), then, with
    ``allocate_bands``, the bands spread by :func:`allocate_bands` on ``calibration``. Returns that allocation, or
    ``None``."""
    needs_frames = config.values is None and (config.name == THRESHOLD or config.allocate_bands)
    if needs_frames and calibration is None:
        raise ConfigError(f"scheme {config.describe()} needs calibration frames [T, B, ...] to measure on")
    if config.values is not None:
        net.set_scheme(config)
        return None
    net.set_scheme(config.replace(allocate_bands=False), calibration=calibration)
    return allocate_bands(net, calibration) if config.allocate_bands else None
