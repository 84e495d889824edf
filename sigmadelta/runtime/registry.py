"""The registry of execution backends: how a network's Sigma-Delta mode is lowered for speed.

A backend is a factory ``factory(net) -> engine``; the engine has ``run(clip) -> out`` (``[T, B, ...]``, the same
values as the dense simulation, leaving the quantizers' records as the dense path does, so op counting works
unchanged) and ``reset()``. Backends register themselves on import (:mod:`sigmadelta.runtime` registers
``"events"``); :meth:`sigmadelta.SigmaDeltaNet.set_backend` looks them up by name, so the network never imports an
engine. ``"dense"`` is the network's own simulation, the reference that every backend must match.

>>> from sigmadelta.runtime import registry as backends
>>> "dense" in backends.names() and "events" in backends.names()
True
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DENSE", "register_backend", "backend_factory", "names"]

DENSE = "dense"
_FACTORIES: dict[str, Callable | None] = {DENSE: None}  # name -> factory(net) -> engine; dense: the net itself


def register_backend(name: str, factory: Callable) -> None:
    """Make ``factory(net)`` available as ``net.set_backend(name)``."""
    if name == DENSE:
        raise ValueError(f"{DENSE!r} is the network's own simulation and cannot be replaced")
    _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
    """The registered backend names, ``"dense"`` first."""
    return tuple(_FACTORIES)


def backend_factory(name: str) -> Callable | None:
    """The factory registered as ``name`` (``None`` for ``"dense"``); a ValueError naming the known ones else."""
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {name!r}; choose from {names()}")
    return _FACTORIES[name]
