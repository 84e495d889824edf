"""The event engine: a Sigma-Delta network run so that each frame's work follows its messages, unit by unit.

``net.set_backend("events")`` builds an :class:`EventEngine`; in ``"sigma-delta"`` mode ``net(x)`` and
``net.run(clip)`` then run here instead of through the dense simulation (``"dense"``, the reference). Both compute

.. math::

    L_t = f(k x_t, L_{t-1}), \\quad s_t = L_t - L_{t-1}, \\quad u_t = u_{t-1} + W s_t / k \\;\\; (u_0 = b)

with ``f`` the level recurrence of the delta scheme (:mod:`sigmadelta.core.functional`). The simulation applies ``W``
to all of ``s_t``; here only the nonzero messages do work, each adding one weight row per tap it reaches, and
everything downstream (activations, pooling, residual adds, averages, the next quantizer) visits only the rows
the update touched.

Parts: compiled kernels (``_kquant``: activations and quantizers; ``_kconv``: layer updates; ``_kops``: the ops
between layers; numba, set up in ``_jit``), index maps (``_maps``), values (:mod:`.values`), steps
(:mod:`.quantize`, :mod:`.layers`, :mod:`.ops`), the graph walk (:mod:`.plan`) and the engine (:mod:`.engine`).

Numerics
--------
- float64 models: every sum in float64; results equal the dense simulation to ~1e-15 over long streams
  (tests: ≤ 1e-9, every scheme, clips and streaming, several streams).
- float32 models: levels, messages and event sums in float32 (the simulation forms its increments in float64):
  values agree to float32 precision, but a unit whose ``k x`` lands within float32 rounding of a level
  boundary can take the other level: a ±1 in one message that later layers carry (with rounding it is undone
  on the unit's next visit; hysteresis can keep it until the unit next moves). ``tests/test_events.py``
  measures how often.
- Layers that run densely recompute ``u = W L / k + b``, which clears the rounding error event sums gather.

Threads: kernels run on the calling thread (see ``_jit``); torch's pool runs the dense fallbacks.
"""

from .engine import POLICIES, EventEngine

__all__ = ["EventEngine", "POLICIES"]
