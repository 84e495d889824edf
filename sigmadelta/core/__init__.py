"""The arithmetic of a Sigma-Delta network: pure operators over a time axis (:mod:`.functional`: Δ, Σ, the
quantizer schemes' level recurrences, straight-through rounding), the stateful modules a converted network is made
of (:mod:`.modules`: :class:`~.modules.Quantizer`, :class:`~.modules.SigmaDeltaLinear`), and the error measures
between a network's outputs and the original's (:mod:`.losses`)."""
