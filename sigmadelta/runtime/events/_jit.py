"""numba, set up once for the event engine: the compile cache in the user cache, and a thread policy that never
fights torch's.

Compile cache: compiling every kernel takes seconds (see ``benchmarks/events_*.json``, ``compile_s``), so
kernels are compiled with ``cache=True`` into ``NUMBA_CACHE_DIR``, which this module points at the user cache
(``<cache_dir>/numba``, see :func:`sigmadelta._utils.cache.cache_dir`) unless the user set it. It must be set before
numba is first imported: numba reads it at import.

Threads: every kernel is compiled without ``parallel``, so it runs on the calling thread and starts no thread
pool of its own. numba's threading layer is set to ``workqueue`` anyway, so that nothing can ever load a second
OpenMP runtime beside the ``libgomp`` that torch brings: two OpenMP runtimes with spinning barriers on two shared
cores made a 0.3 ms convolution take 18 ms (issue 29). torch's own pool (``torch.set_num_threads``) runs the
dense fallbacks; between them its workers wait, and with more torch threads than free cores
``OMP_WAIT_POLICY=PASSIVE`` (set before torch is imported) stops them spinning while a kernel runs.
"""

from __future__ import annotations

import os

from ..._utils.cache import cache_dir

if "NUMBA_CACHE_DIR" not in os.environ:
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir() / "numba")

import numba  # noqa: E402  (after NUMBA_CACHE_DIR)

if numba.config.CACHE_DIR != os.environ["NUMBA_CACHE_DIR"]:  # numba was imported before us: tell it now
    numba.config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]
numba.config.THREADING_LAYER = "workqueue"

__all__ = ["jit"]


def jit(fn=None, *, contract: bool = False):
    """Compile ``fn`` for the CPU, cached on disk, single-threaded, releasing the GIL; types are taken from the
    first call (one compiled version per dtype).

    ``error_model="numpy"``: a division by zero gives inf/nan instead of raising, so numba adds no check per
    division, which would stop LLVM from vectorising the loop (4x slower quantizers). No ``fastmath``: the
    quantizers must round as torch does; ``contract`` allows fused multiply-adds (the layer updates, whose sums
    may differ from a dense product's in their last bits anyway).
    """
    options = dict(cache=True, nogil=True, boundscheck=False, error_model="numpy")
    if contract:
        options["fastmath"] = {"contract"}
    if fn is None:
        return numba.njit(**options)
    return numba.njit(**options)(fn)
