"""Reading files written by ``torch.save`` safely (``weights_only=True``), and saying in words what a file that
cannot be read holds: never PyTorch's own advice to load it unsafely."""

from __future__ import annotations

import os
import zipfile

__all__ = ["what_file"]


def what_file(path: str | os.PathLike, error: Exception) -> str:
    """What a file that ``torch.load(path, weights_only=True)`` refused with ``error`` holds, in a few words."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
    objects = ("pickled Python objects besides tensors (a whole pickled model or optimizer, say), which must not be "
               "loaded: they could run code")
    refused = "Weights only load failed" in str(error)  # readable, but holds more than tensors
    if size == 0:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(path):
            return f"a zip archive that ends early or is damaged ({size:,} bytes): truncated in a copy or download?"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            return f"a zip archive that is not a PyTorch file (it holds {', '.join(names[:3]) or 'nothing'})"
        return objects if refused else f"a PyTorch archive whose contents are damaged ({type(error).__name__})"
    if head[:1] == b"\x80":  # a pickle: PyTorch's legacy format
        return objects if refused else f"a pickle (legacy PyTorch file) that ends early or is damaged ({size:,} bytes)"
    if head.lstrip()[:1] in (b"{", b"["):
        return f"a JSON file ({size:,} bytes), not a PyTorch file"
    return f"a {size:,}-byte file of another kind (it starts with {head!r})"
