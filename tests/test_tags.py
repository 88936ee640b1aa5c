"""Every run-tag key is written once, in ``matching_pipeline/defs/tags.py``."""

from __future__ import annotations

import ast
from pathlib import Path

from matching_pipeline.defs import tags

PACKAGE = Path(__file__).resolve().parent.parent / "matching_pipeline"
PREFIXES = ("matching/", "dagster/")


def _keys() -> dict[str, str]:
    return {name: value for name, value in vars(tags).items() if name.isupper() and isinstance(value, str)}


def test_each_key_has_one_name_and_a_known_prefix() -> None:
    keys = _keys()
    assert len(keys) >= 20
    assert all(value.startswith(PREFIXES) for value in keys.values()), keys
    assert len(set(keys.values())) == len(keys), "two names for one tag key"


def test_no_other_module_spells_a_tag_key() -> None:
    """A key written out elsewhere would drift from the one the sensors and the job view read."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "defs" / "tags.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
        literals = (n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str))
        for node in literals:
            if id(node) not in docstrings and node.value.startswith(PREFIXES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)
