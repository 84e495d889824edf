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

__all__ = ["cache_dir", "atomic_write", "array_digest"]


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
    """Create ``path`` atomically: ``write(tmp_name)`` fills a temporary file, which then replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def array_digest(*arrays: np.ndarray) -> str:
    """A short content hash of arrays: keys cache files to the exact data they were derived from."""
    h = hashlib.blake2b(digest_size=8)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.data)
    return h.hexdigest()
