"""The package's layers import one way, and no module reaches into another's private names (ARCHITECTURE.md).

Every ``import`` of every module of ``sigmadelta/`` is read with ``ast``, at module level and inside functions (lazy
imports), relative ones resolved, and checked against the layer table below: a module may import a lower layer,
or a module of its own group; anything else is a back-edge and fails, naming file and line.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import sigmadelta

ROOT = pathlib.Path(sigmadelta.__file__).parent

# group (a module, or a subpackage with everything in it) -> layer; lower layers never import higher ones
LAYERS = {
    "sigmadelta.errors": 0,
    "sigmadelta._support": 1, "sigmadelta.functional": 1, "sigmadelta.testing": 1, "sigmadelta.backends": 1,
    "sigmadelta.losses": 1, "sigmadelta._checks": 1, "sigmadelta.config": 2,
    "sigmadelta.modules": 2, "sigmadelta.data": 2,
    "sigmadelta.accounting": 3, "sigmadelta.rewrite": 3, "sigmadelta.models": 3,
    "sigmadelta.net": 4,
    "sigmadelta.stream": 5, "sigmadelta.minibatches": 5,
    "sigmadelta.optimize": 6, "sigmadelta.evaluation": 6, "sigmadelta.report": 6, "sigmadelta.scheme_search": 6,
    "sigmadelta.allocation": 5,
    "sigmadelta.scales": 7,
    "sigmadelta.runtime": 8,
    "sigmadelta": 9,  # the package's face: re-exports, registers the backends
    "sigmadelta.paper": 10,  # the paper's experiments, on the public API
    "sigmadelta.cli_checks": 10,  # the command line's argument and output-path checks
    "sigmadelta.cli_schemes": 10,  # the delta-scheme options of the commands
    "sigmadelta.cli_commands": 11,  # what each command does
    "sigmadelta.cli": 12,
    "sigmadelta.__main__": 13,
}


def module_name(path: pathlib.Path) -> str:
    parts = ["sigmadelta", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    """The longest entry of LAYERS that is ``module`` or a package holding it."""
    best = max((g for g in LAYERS if module == g or module.startswith(g + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"module {module} has no layer: add it to LAYERS in {__file__} and to ARCHITECTURE.md")
    return best


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
    """Back-edges and reaches into private names in one module's source."""
    problems = []
    layer, group = LAYERS[group_of(module)], group_of(module)
    for line, target, names in imports_of(source, module, is_package):
        if target != "sigmadelta" and not target.startswith("sigmadelta."):
            continue
        # `from pkg import sub` names a submodule when pkg/sub exists
        targets = [f"{target}.{n}" if _is_module(f"{target}.{n}") else target for n in names] or [target]
        for t in targets:
            t_group = group_of(t)
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
    ("sigmadelta.functional", "from .net import SigmaDeltaNet"),  # relative, at module level
    ("sigmadelta.net", "def f():\n    from .runtime.sparse import SparseEngine\n"),  # lazy, inside a function
    ("sigmadelta.data.video", "def f():\n    from .. import models\n"),  # a sibling subpackage one layer up
    ("sigmadelta.runtime.bench", "from .. import convert"),  # the package root from below it
    ("sigmadelta.scales", "import sigmadelta.cli"),
])
def test_the_guard_fails_on_a_back_edge(module, source):
    assert violations(source, module)


@pytest.mark.parametrize("module, source", [
    ("sigmadelta.data.catalog", "from ..models import _bundle"),
    ("sigmadelta.scales", "from .data._cache import cache_dir"),
    ("sigmadelta.evaluation", "from .accounting import _Plan"),
    ("sigmadelta.cli", "from sigmadelta import models\nmodels._bundle.specs()"),
])
def test_the_guard_fails_on_a_private_name(module, source):
    assert violations(source, module)


def test_the_guard_allows_downward_and_own_group_imports():
    assert not violations("from .._support import cache_dir\nfrom .mnist import load_mnist", "sigmadelta.data.temporal")
    assert not violations("import sigmadelta\nfrom sigmadelta import data, models", "sigmadelta.paper.mnist")


def test_no_installed_top_level_experiments_package():
    import tomllib

    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["sigmadelta*"]
    assert not (ROOT.parent / "experiments" / "__init__.py").exists()
