"""The parts of the objectives that learn scales (:mod:`sigmadelta.learn.optimize`) and fine-tune weights
(:mod:`sigmadelta.learn.finetune`): each input unit's fan-out, the cost of a unit's change, the distillation loss,
and taps on the quantizers' inputs.

The cost surrogate of a quantizer ``l`` with scale ``k_l`` is a sum over its input units ``i``:

.. math:: C_l = \\sum_i c(k_l\\,\\Delta x_{l,i}) \\; \\mathrm{fanout}_{l,i}, \\qquad
          c(d) = |d| \\;(\\text{additions}) \\quad\\text{or}\\quad \\tanh\\frac{|d|}{1 + h_l} \\;(\\text{events})

(``Δx`` the change from the previous frame, or ``x`` itself for the Rounding network's cost).
"""

from __future__ import annotations

import torch

from ..accounting import fanout_map
from ..config import FinetuneConfig
from ..core.losses import error_terms
from ..net import SigmaDeltaNet

__all__ = ["input_fanouts", "unit_cost", "distill_loss", "QuantizerTaps"]


@torch.no_grad()
def input_fanouts(net: SigmaDeltaNet, probe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Quantizer name -> the fan-out of each of its input units (summed over the layers it feeds), ``[*sample]`` in
    the net's dtype; ``probe`` is one input ``[1, ...]``, run through the original network to see the shapes."""
    with net.configured(mode="original", counting=False):
        net.graph_module(probe)
        shapes = {q: tuple(seen.x.shape[1:]) for q, seen in net.observations().items()}
    fan = {q: torch.zeros(s, dtype=torch.float64) for q, s in shapes.items()}
    for layer, q in net.layer_inputs.items():  # a quantizer shared by several layers pays each one's fan-out
        fan[q] += fanout_map(net.layers[layer], shapes[q])
    return {q: f.to(net.dtype) for q, f in fan.items()}


def unit_cost(change: torch.Tensor, surrogate: str = "scaled", h: float = 0.0) -> torch.Tensor:
    """``c(d)`` of every unit whose scaled input moved by ``change`` (module docstring): ``|d|``, the additions
    (``"scaled"``; ``"rounded"`` passes ``Δ round_ste(k x)`` as ``d``), or ``tanh(|d| / (1 + h))``, the events
    (about one message per ``1 + h`` levels moved, at most one per frame). ``|d|`` is positively homogeneous,
    ``c(k x) = k c(x)``, which scale learning uses to sum before scaling."""
    if surrogate == "events":
        return torch.tanh(change.abs() / (1.0 + h))
    return change.abs()


def distill_loss(out: torch.Tensor, target: torch.Tensor, cfg: FinetuneConfig) -> torch.Tensor:
    """Mean per frame of ``cfg.error`` between the network's logits ``out`` and the original's ``target``
    (``[N, classes]``); ``"distill-kl"`` at temperature τ, scaled by ``τ²``."""
    if cfg.error == "distill-kl":
        tau = cfg.temperature
        return error_terms(cfg.error)(out / tau, target / tau).sum(-1).mean() * tau ** 2
    return error_terms(cfg.error)(out, target).sum(-1).mean()


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
