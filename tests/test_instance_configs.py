"""Both shipped instance configs load in Dagster 1.13 and free a crashed run's pool slots."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from tests.pg_cluster import PostgresCluster

ROOT = Path(__file__).parents[1]


def _load(home: Path, config: Path) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(config.read_text())
    # from_config validates the file against the instance config schema: an unknown or
    # misspelled key under run_monitoring fails here.
    return dg.DagsterInstance.from_config(str(home))


def _assert_monitoring(instance: dg.DagsterInstance) -> None:
    monitoring = instance.run_monitoring_settings
    assert instance.run_monitoring_enabled
    assert monitoring["free_slots_after_run_end_seconds"] == 30
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_default_instance_config_loads_with_slot_freeing(tmp_path: Path) -> None:
    with _load(tmp_path / "home", ROOT / "dagster.yaml") as instance:
        _assert_monitoring(instance)


@pytest.mark.postgres
def test_postgres_instance_config_loads_with_slot_freeing(
    tmp_path: Path, cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", cluster.create_database("dagster"))
    with _load(tmp_path / "home", ROOT / "deploy" / "postgres" / "dagster.yaml") as instance:
        _assert_monitoring(instance)
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
