"""The package's layers import one way, and no module reaches into another's private names (docs/architecture.md).

Every ``import`` of every module of ``sigmadelta/`` is read with ``ast``, at module level and inside functions (lazy
imports), relative ones resolved, and checked against the layer table below: a module may import a lower layer,
or a module of its own group; anything else is a back-edge and fails, naming file and line.
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

import sigmadelta

ROOT = pathlib.Path(sigmadelta.__file__).parent
ARCHITECTURE = ROOT.parent / "docs" / "architecture.md"


def read_layers(text: str) -> dict[str, int]:
    """The layer table of docs/architecture.md: group -> layer, from its rows ``| 3 | `sigmadelta.data` | ... |``."""
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|", text, flags=re.MULTILINE)
    layers = {group: int(layer) for layer, group in rows}
    assert len(layers) == len(rows), "a group is listed twice in docs/architecture.md"
    return layers


LAYERS = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))
# groups whose every submodule belongs to them; any other group is one module (the face: __init__ only)
PACKAGES = {g for g in LAYERS if g != "sigmadelta" and (ROOT.parent.joinpath(*g.split(".")) / "__init__.py").is_file()}


def module_name(path: pathlib.Path) -> str:
    parts = ["sigmadelta", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str, layers: dict[str, int] | None = None) -> str:
    """The group of ``module``: itself if listed, else the listed package holding it; none is an error."""
    layers = LAYERS if layers is None else layers
    if module in layers:
        return module
    holders = [g for g in layers if g in PACKAGES and module.startswith(g + ".")]
    if not holders:
        raise AssertionError(f"module {module} has no layer: add a row for it to the table of docs/architecture.md")
    return max(holders, key=len)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` of every import in ``source``, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target, [alias.name for alias in node.names]))
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """A module without a layer, back-edges and reaches into private names in one module's source."""
    try:
        group = group_of(module)
    except AssertionError as e:
        return [str(e)]
    problems = []
    layer = LAYERS[group]
    for line, target, names in imports_of(source, module, is_package):
        if target != "sigmadelta" and not target.startswith("sigmadelta."):
            continue
        # `from pkg import sub` names a submodule when pkg/sub exists
        targets = [f"{target}.{n}" if _is_module(f"{target}.{n}") else target for n in names] or [target]
        for t in targets:
            try:
                t_group = group_of(t)
            except AssertionError as e:
                problems.append(f"{module}:{line}: {e}")
                continue
            if t_group != group and LAYERS[t_group] >= layer:
                problems.append(f"{module}:{line} imports {t} (layer {LAYERS[t_group]}) from layer {layer}")
            private = [p for p in t.split(".")[1:] if p.startswith("_") and not p.startswith("__")]
            if private and not module.startswith(t.rsplit("." + private[0], 1)[0]):
                problems.append(f"{module}:{line} imports the private module {t}")
        if target != module and any(n.startswith("_") and not n.startswith("__") for n in names):
            problems.append(f"{module}:{line} imports private names {names} of {target}")
    return problems + private_attributes(source, module)


def private_attributes(source: str, module: str) -> list[str]:
    """``alias._name`` where ``alias`` is a module of the package bound by an import (``models._bundle``)."""
    tree = ast.parse(source)
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("sigmadelta")}
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("sigmadelta")):
            aliases |= {a.asname or a.name for a in node.names}
    return [f"{module}:{node.lineno} reaches the private name {node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__")]


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def all_modules() -> list[tuple[pathlib.Path, str]]:
    return [(p, module_name(p)) for p in sorted(ROOT.rglob("*.py"))]


def test_every_module_has_a_layer_and_imports_one_way():
    assert len(all_modules()) > 30  # the whole package is read, not a list of a few modules
    problems = []
    for path, module in all_modules():
        problems += violations(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("module, source", [
    ("sigmadelta.core.functional", "from ..net import SigmaDeltaNet"),  # relative, at module level
    ("sigmadelta.net", "def f():\n    from .learn.finetune import finetune\n"),  # lazy, inside a function
    ("sigmadelta.data.video", "def f():\n    from .. import models\n"),  # a sibling subpackage one layer up
    ("sigmadelta.eval.timing", "from .. import convert"),  # the package's face from below it
    ("sigmadelta.files.scales", "import sigmadelta.cli"),
    ("sigmadelta.recipes", "from .learn.calibrate import calibrate"),
])
def test_the_guard_fails_on_a_back_edge(module, source):
    assert any("imports" in p for p in violations(source, module))


@pytest.mark.parametrize("module, source", [
    ("sigmadelta.data.catalog", "from ..models import _bundle"),
    ("sigmadelta.files.scales", "from ..data._cache import cache_dir"),
    ("sigmadelta.eval.video", "from ..accounting import _Plan"),
    ("sigmadelta.cli.commands", "from sigmadelta import models\nmodels._bundle.specs()"),
])
def test_the_guard_fails_on_a_private_name(module, source):
    assert any("private" in p for p in violations(source, module))


@pytest.mark.parametrize("module, source", [
    ("sigmadelta.newmodule", "import torch"),  # a new module at the root: no row, no layer
    ("sigmadelta.net", "from .newmodule import helper"),  # an import of one
])
def test_the_guard_fails_on_an_unlisted_module(module, source):
    assert any("has no layer" in p for p in violations(source, module))


def test_the_guard_allows_downward_and_own_group_imports():
    assert not violations("from .._utils.cache import cache_dir\nfrom .mnist import load_mnist", "sigmadelta.data.temporal")
    assert not violations("import sigmadelta\nfrom sigmadelta import data, models", "sigmadelta.paper.mnist")
    assert not violations("from ._common import setup", "sigmadelta.paper.activity")  # private, own group


def test_the_table_lists_every_group_that_exists_and_only_those():
    root_modules = {f"sigmadelta.{p.stem}" for p in ROOT.glob("*.py") if p.stem != "__init__"}
    packages = {f"sigmadelta.{p.parent.name}" for p in ROOT.glob("*/__init__.py")}
    assert set(LAYERS) == root_modules | packages | {"sigmadelta"}
    assert len(root_modules | {p for p in packages if not p.split(".")[-1].startswith("_")}) <= 20
    assert len(root_modules) <= 10  # the package root holds its public face, not the architecture


def test_no_installed_top_level_experiments_package():
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["sigmadelta*"]
    assert not (ROOT.parent / "experiments" / "__init__.py").exists()
