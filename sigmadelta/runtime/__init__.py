"""Execution backends that lower the dense reference network (see ``SigmaDeltaNet.set_backend``).

Importing this package registers them in :mod:`sigmadelta.runtime.registry`; ``import sigmadelta`` does.
"""

from .registry import register_backend
from .sparse import SparseEngine

register_backend("sparse", SparseEngine)
