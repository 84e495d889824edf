"""Atomic writes: every file goes to a temporary name in its folder first and is then moved into place with
:func:`os.replace`, so a crash, Ctrl-C or a concurrent run never leaves a half-written file under the final name.
Files get the permissions a plain ``open(path, "w")`` would give (0666 less the umask), not the temporary's 0600.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_all", "write_text", "write_json"]


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp_name)`` fills a temporary file, which then replaces ``path``.

    On any failure, Ctrl-C included, the temporary file is removed and ``path`` is untouched.
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


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data, indent: int = 2) -> Path:
    """Write ``data`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it: put it straight back
    os.umask(mask)
    return mask
