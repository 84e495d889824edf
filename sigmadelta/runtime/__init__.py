"""Execution backends that lower the dense reference network (see ``SigmaDeltaNet.set_backend``).

Importing this package registers them in :mod:`sigmadelta.backends`; ``import sigmadelta`` does. ``"events"``
(:mod:`sigmadelta.runtime.events`) is imported on first use: it loads numba.
"""

from ..backends import register_backend
from .sparse import SparseEngine


def _events_engine(net):
    from .events import EventEngine  # numba is loaded here, not by ``import sigmadelta``

    return EventEngine(net)


register_backend("sparse", SparseEngine)
register_backend("events", _events_engine)
