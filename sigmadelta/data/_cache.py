"""The user cache: where derived assets (Temporal-MNIST orders, trained MLP weights) are kept between runs.

``$SIGMADELTA_CACHE`` if set, else ``$XDG_CACHE_HOME/sigmadelta``, else ``~/.cache/sigmadelta``. Every file is
written to a temporary name in the same directory and then moved into place with :func:`os.replace`, so a
crash or a concurrent run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["cache_dir", "atomic_write", "atomic_write_all", "array_digest"]


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
