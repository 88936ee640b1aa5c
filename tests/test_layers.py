"""The package shows its layers: arrows point one way, no cycles, no private Dagster imports.

core <- clients / results <- defs <- jobs <- entry points (cli.py, api.py, definitions.py).
Every import counts, function-level ones included (``ast.walk`` sees them all).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "matching_pipeline"
ENTRY_POINTS = {"cli", "api", "definitions"}
TOOL = REPO.parent / "shared" / "tools" / "imports.py"

ALLOWED = {
    # layer: the package's top-level parts it may import (besides itself)
    "core": set(),
    "clients": {"core", "settings"},
    "results": {"core", "settings"},
    "sample": {"core", "settings"},
    "defs": {"core", "clients", "results", "sample", "settings"},
    "jobs": {"core", "clients", "results", "sample", "settings", "defs"},
}


def _imports(path: Path) -> set[str]:
    """The first part below ``matching_pipeline`` of every module ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names if node.module == "matching_pipeline"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "matching_pipeline" and len(parts) > 1:
                found.add(parts[1])
    return found


def _layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer: str) -> None:
    wrong = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for imported in _imports(path) - {layer, "__init__"}:
            if imported not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(REPO)} imports matching_pipeline.{imported}")
    assert not wrong, "\n".join(wrong)


def test_only_entry_points_import_entry_points() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = _layer_of(path)
        if layer in ENTRY_POINTS:
            continue
        for imported in _imports(path) & ENTRY_POINTS:
            wrong.append(f"{path.relative_to(REPO)} imports matching_pipeline.{imported}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.skipif(not TOOL.exists(), reason="the shared import checker sits beside the checkout only in the workplace and CI; tests/test_definitions.py checks cycles and private imports on its own")
def test_no_import_cycles_and_no_private_dagster_imports() -> None:
    done = subprocess.run([sys.executable, str(TOOL), "matching_pipeline"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "cycles=0 private_dagster=0", done.stdout
