"""The code location loads from the environment alone, with everything it promises, on public APIs.

A broken wiring (a sensor targeting a job that is not defined, a resource a job needs but nobody
provides, a private ``dagster._`` import that the next Dagster release breaks) otherwise shows up
only when the webserver or the daemon starts, which no other fast test does.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from matching_pipeline.defs.stages import STAGE_SPECS

PACKAGE = Path(__file__).parents[1] / "matching_pipeline"

ASSETS = {"catalog", "enhanced_matches", "ai_matches", "web_search_matches", "match_summary", "evaluation"}
SENSORS = {"new_items_sensor", "cascade_sensor", "catalog_sensor"}
SCHEDULES = {"catalog_rerun_schedule", *(f"repair_{stage}_schedule" for stage in STAGE_SPECS)}
JOBS = {"catalog_job", *(spec.job_name for spec in STAGE_SPECS.values())}


@pytest.fixture
def loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    """What ``dagster dev`` loads: ``build_definitions()`` with the settings read from the environment."""
    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path / "data"))
    from matching_pipeline.definitions import build_definitions

    return build_definitions()


def test_the_code_location_loads_from_the_environment_with_every_asset_sensor_and_schedule(loaded: dg.Definitions) -> None:
    # Resolves every job against the resources and every sensor/schedule against its target.
    dg.Definitions.validate_loadable(loaded)
    assert {key.to_user_string() for key in loaded.resolve_all_asset_keys()} >= ASSETS
    assert {sensor.name for sensor in loaded.sensors} >= SENSORS
    assert {schedule.name for schedule in loaded.schedules} >= SCHEDULES
    assert {job.name for job in loaded.resolve_all_job_defs()} >= JOBS
    for spec in STAGE_SPECS.values():
        stage = loaded.resolve_assets_def(spec.asset_name)
        assert stage.partitions_def is not None, spec.asset_name
        assert stage.backfill_policy == spec.backfill_policy, spec.asset_name


def test_a_bad_setting_stops_the_load_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from matching_pipeline.definitions import build_definitions

    monkeypatch.setenv("MATCHING_INBOX_SETTLE_SECONDS", "soon")
    with pytest.raises(ValueError, match="MATCHING_INBOX_SETTLE_SECONDS='soon'"):
        build_definitions()


def _imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at module level or inside functions, made absolute."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return found


def test_no_private_dagster_imports_anywhere_in_the_package() -> None:
    private = [
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name in _imports(path)
        if name == "dagster._" or name.startswith("dagster._")
    ]
    assert private == []


def test_the_package_has_no_import_cycles_not_even_inside_functions() -> None:
    modules = {
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
        for p in PACKAGE.rglob("*.py")
    }

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: {o for n in _imports(p) if (o := owner(n)) and o != m} for m, p in modules.items()}
    # An __init__ importing its own sub-modules is how a package re-exports, not a cycle.
    graph = {m: {o for o in deps if not o.startswith(m + ".")} for m, deps in graph.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :] + [dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.slow
def test_dagster_itself_loads_and_validates_the_code_location(tmp_path: Path) -> None:
    """The loader the webserver and the daemon use (the ``@dg.definitions`` function), not ours."""
    cli = Path(sys.executable).parent / "dagster"
    env = {**os.environ, "MATCHING_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text("")
    done = subprocess.run(
        [str(cli), "definitions", "validate", "-m", "matching_pipeline.definitions"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Validation successful for code location matching_pipeline.definitions" in done.stdout + done.stderr
