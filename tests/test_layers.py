"""Layers hold (docs/ARCHITECTURE.md): inference, looking and delivery never import training, and
no module imports another package's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dirtymnist"
BELOW_TRAIN = ("glyphs", "data", "model", "infer", "look", "deliver")  # layers that must work without train/


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) of every import of `path`, top-level or in functions;
    relative imports resolved against the file's package."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.append((module, [alias.name for alias in node.names], node.lineno))
    return out


def _modules(*packages: str) -> list[Path]:
    roots = [SRC / p for p in packages] if packages else [SRC]
    return sorted(p for root in roots for p in root.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(*BELOW_TRAIN), ids=lambda p: str(p.relative_to(SRC)))
def test_layers_below_training_never_import_it(path):
    bad = [f"line {line}: {module}" for module, names, line in _imports(path)
           if module == "dirtymnist.train" or module.startswith("dirtymnist.train.")
           or (module == "dirtymnist" and "train" in names)]
    assert not bad, f"{path.relative_to(SRC)} imports train/: {bad}"


def test_no_module_imports_another_packages_private_names():
    bad = []
    for path in _modules():
        own = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:2])  # dirtymnist.<package>
        for module, names, line in _imports(path):
            if not module.startswith("dirtymnist") or ".".join(module.split(".")[:2]) == own:
                continue
            bad += [f"{path.relative_to(SRC)}:{line}: {module}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_the_checks_see_imports_inside_functions():
    modules = {m for m, _, _ in _imports(SRC / "look" / "heatmaps.py")}
    assert "dirtymnist.model.transforms" in modules  # imported inside class_maps only
