"""The user cache: ``$SIGMADELTA_CACHE`` if set, else ``$XDG_CACHE_HOME/sigmadelta``, else ``~/.cache/sigmadelta``.

What the package learns or derives (Temporal-MNIST orders, the MNIST MLPs, calibrated scales, fine-tuned
checkpoints, compiled kernels, fetched clips) is cached there, each under a file name from :func:`cache_file`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "cache_file", "safe_name"]


def cache_dir() -> Path:
    """The cache directory (created on demand)."""
    root = os.environ.get("SIGMADELTA_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = os.path.join(xdg, "sigmadelta") if xdg else os.path.join(os.path.expanduser("~"), ".cache", "sigmadelta")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(text: str) -> str:
    """``text`` with every character but letters, digits and ``-_.`` replaced by ``_`` (a file name part)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def cache_file(kind: str, model: str, lam: float, key: str, suffix: str) -> Path:
    """``<cache>/<kind>/<model>-lam<λ>-<key><suffix>``: where a result learned for ``model`` at ``λ`` is cached,
    ``key`` a content digest of everything else it depends on (:func:`sigmadelta._utils.digest.digest`)."""
    return cache_dir() / kind / f"{safe_name(model)}-lam{lam:.3g}-{key}{suffix}"
