"""The fine-tuning objective's parts (:mod:`sigmadelta.finetune`, whose docstring states the loss): the distillation
loss, the taps on the quantizers' inputs, each input unit's fan-out, and the cost surrogate per frame."""

from __future__ import annotations

import torch

from .accounting import fanout_map
from .checkpoints import FinetuneConfig
from .functional import round_ste
from .net import SigmaDeltaNet

__all__ = ["distill_loss", "QuantizerTaps", "input_fanouts", "cost_surrogate"]


def distill_loss(out: torch.Tensor, target: torch.Tensor, cfg: FinetuneConfig) -> torch.Tensor:
    """Mean per frame of the distillation loss; ``out``, ``target``: ``[N, classes]`` logits."""
    tau = cfg.temperature
    if cfg.error == "kl":
        log_p, log_q = (target / tau).log_softmax(-1), (out / tau).log_softmax(-1)
        return (log_p.exp() * (log_p - log_q)).sum(-1).mean() * tau ** 2
    return ((out.softmax(-1) - target.softmax(-1)) ** 2).sum(-1).mean()


class QuantizerTaps:
    """Forward pre-hooks on every quantizer: its input, with autograd history, for the cost term."""

    def __init__(self, net: SigmaDeltaNet):
        self.inputs: dict[str, torch.Tensor] = {}
        self.handles = [q.register_forward_pre_hook(self._hook(name)) for name, q in net.quantizers.items()]

    def _hook(self, name: str):
        def hook(module, args):
            self.inputs[name] = args[0]
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def input_fanouts(net: SigmaDeltaNet, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Quantizer -> fan-out of each input unit (summed over the layers it feeds), ``[*sample]``."""
    taps = QuantizerTaps(net)
    try:
        with torch.no_grad(), net.configured(mode="original", counting=False):
            net.graph_module(probe)
        shapes = {q: tuple(x.shape[1:]) for q, x in taps.inputs.items()}
    finally:
        taps.remove()
    fan = {q: torch.zeros(s, dtype=torch.float64) for q, s in shapes.items()}
    for layer, q in net.layer_inputs.items():
        fan[q] += fanout_map(net.layers[layer], shapes[q])
    return {q: f.to(net.dtype) for q, f in fan.items()}


def cost_surrogate(net: SigmaDeltaNet, taps: QuantizerTaps, fanout: dict, window: int, cfg: FinetuneConfig) -> torch.Tensor:
    """Surrogate Sigma-Delta cost per frame, mean over the ``(T − 1)·b`` frame pairs of the windows:
    ``Σ_l Σ_i c(k_l Δx_{l,i}) fanout_{l,i}`` with ``c(d) = |d|`` (``"scaled"``: additions), ``|Δ round_ste(kx)|``
    (``"rounded"``) or ``tanh(|d| / (1 + h_l))`` (``"events"``; ``h_l`` the quantizer's hysteresis, 0 without)."""
    h = net.scheme_params if net.scheme == "hysteresis" else {}
    total = 0.0
    for q, mod in net.quantizers.items():
        x = taps.inputs[q].unflatten(0, (window, -1))  # (T, b, ...)
        k = mod.log_scale.exp().to(x.dtype)
        dx = round_ste(k * x).diff(dim=0) if cfg.cost == "rounded" else (k * x).diff(dim=0)
        per_unit = torch.tanh(dx.abs() / (1.0 + h.get(q, 0.0))) if cfg.cost == "events" else dx.abs()
        total = total + (per_unit * fanout[q]).sum() / (dx.shape[0] * dx.shape[1])
    return total
