"""Checks of the command line's arguments and output paths, made before any work (see :mod:`sigmadelta.cli`).

An output path is refused when it is a folder where a file is wanted (or a file where a folder is), when a parent
on its way is a file, or when its nearest existing folder does not let this process create files (tested by
creating a nameless temporary file there, which also holds for root and read-only file systems).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from ..errors import SigmaDeltaError

__all__ = ["OutputPathError", "OUTPUT_OPTIONS", "check_output_path", "check_outputs", "positive_int",
           "positive_float", "nonnegative_float", "lam_value"]


class OutputPathError(SigmaDeltaError, ValueError):
    """An output path that cannot be written: a folder where a file is wanted (or the reverse), a parent that is
    a file, a place without write permission, a plot format matplotlib does not write."""


# (attribute, option, whether it names a folder): every output a command writes
OUTPUT_OPTIONS = (("json", "--json", False), ("plot", "--plot", False), ("output", "--output", False),
                  ("out", "--out", True))


def check_output_path(path: str | os.PathLike, option: str, folder: bool = False) -> Path:
    """Refuse an output path before any work: it must not be a folder (a file, for ``folder``), and its nearest
    existing ancestor must be a folder this process can create files in (checked by creating a nameless one)."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file, not a folder")
    if not folder and path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name")
    ancestor = path if folder else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{option} {path}: {ancestor} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as e:
        raise OutputPathError(f"{option} {path}: cannot create files in {ancestor} ({e.strerror})") from None
    return path


def check_outputs(args) -> None:
    """Every output path of the command, before anything runs; two options naming one file are refused too."""
    seen: dict[str, str] = {}
    for attr, option, folder in OUTPUT_OPTIONS:
        path = getattr(args, attr, None)
        if path is None:
            continue
        check_output_path(path, option, folder)
        key = os.path.realpath(path)
        if key in seen:
            raise OutputPathError(f"{seen[key]} and {option} name the same file {path}")
        seen[key] = option
    if getattr(args, "plot", None):
        from matplotlib.backend_bases import FigureCanvasBase

        kinds = FigureCanvasBase.get_supported_filetypes()
        suffix = Path(args.plot).suffix.lstrip(".").lower()
        if suffix not in kinds:
            what = repr(suffix) if suffix else "a file without a suffix"
            raise OutputPathError(f"--plot {args.plot}: matplotlib cannot write {what}; "
                                  f"name it .png, .pdf, .svg, ... ({', '.join(sorted(kinds))})")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _finite_float(text: str, allow_zero: bool, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{what} a finite number {'>=' if allow_zero else '>'} 0, got {text}")
    return value


def lam_value(text: str) -> float:
    return _finite_float(text, True, "λ must be")


def positive_float(text: str) -> float:
    return _finite_float(text, False, "must be")


def nonnegative_float(text: str) -> float:
    return _finite_float(text, True, "must be")
