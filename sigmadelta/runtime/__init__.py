"""Execution backends that lower the dense reference network (see ``SigmaDeltaNet.set_backend``).

Importing this package registers them in :mod:`sigmadelta.runtime.registry`; ``import sigmadelta`` does.
``"events"`` (:mod:`sigmadelta.runtime.events`, the compiled event-driven engine) is imported on first use: it
loads numba.
"""

from .registry import register_backend


def _events_engine(net):
    from .events import EventEngine  # numba is loaded here, not by ``import sigmadelta``

    return EventEngine(net)


register_backend("events", _events_engine)
