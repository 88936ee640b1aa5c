"""The command line end to end on the bundled sample, and on the real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from matching_pipeline.cli import main
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.settings import SAMPLE_DIR


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path / "data"))
    for name in ("MATCHING_DATABASE_URL", "MATCHING_CATALOG_PATH", "OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    open_results_database.cache_clear()
    return tmp_path


def test_match_runs_the_sample_through_dagster_and_writes_one_row_per_item(env: Path, capsys) -> None:
    out = env / "results.csv"
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12/12 chunks" in printed and "wrote 120 rows" in printed

    results = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(results) == 120
    assert list(results.columns[:5]) == ["item_id", "catalog_id", "stage", "method", "confidence"]
    assert "quantity" in results.columns  # extra input columns are carried to the results
    truth = pd.read_csv(SAMPLE_DIR / "truth.csv", dtype=str, keep_default_na=False)
    joined = results.merge(truth, on="item_id", suffixes=("", "_true"))
    matched = joined[joined["catalog_id"] != ""]
    assert len(matched) >= 60
    assert (matched["catalog_id"] == matched["catalog_id_true"]).mean() >= 0.97

    with dg.DagsterInstance.get() as instance:  # the runs are in DAGSTER_HOME, for the UI
        runs = instance.get_runs(dg.RunsFilter(tags={"matching/project": "demo"}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert len(instance.get_materialized_partitions(dg.AssetKey("enhanced_matches"))) == 12

    # The same file again finishes nothing twice.
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv")]) == 0
    assert "already done" in capsys.readouterr().out


def test_bad_input_exits_non_zero_naming_file_row_and_column(env: Path, capsys) -> None:
    bad = env / "bad.csv"
    bad.write_text("item_id,description\n1,Drill\n2,\n")
    assert main(["match", "--project", "demo", "--items", str(bad)]) == 2
    assert "bad.csv, row 2, column 'description': required value is empty" in capsys.readouterr().err

    mapped = env / "mapped.csv"
    mapped.write_text("SKU,Name\nA1,Bosch drill\n")
    assert main(["match", "--project", "demo", "--items", str(mapped)]) == 2
    assert "column 'description'" in capsys.readouterr().err
    assert main(["match", "--project", "demo", "--items", str(mapped), "--columns", "item_id=SKU,description=Name", "--stages", "enhanced"]) == 0


def test_bad_catalog_is_reported(env: Path, capsys) -> None:
    catalog = env / "catalog.csv"
    catalog.write_text("catalog_id,description\nC1,Drill\nC1,Saw\n")
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--catalog", str(catalog)]) == 2
    assert "duplicate catalog_id 'C1' (rows 1, 2)" in capsys.readouterr().err


def test_pipeline_on_postgres_for_dagster_storage_and_results(tmp_path: Path, monkeypatch, postgres_database: str) -> None:
    """Dagster's storage (dagster-postgres) and the results database both on the real server."""
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.jobs.runner import ensure_partitions, run_stage
    from matching_pipeline.settings import Settings

    settings = Settings(data_dir=tmp_path, inbox_dir=tmp_path / "inbox", database_url=postgres_database, catalog_path=SAMPLE_DIR / "catalog.csv")
    defs = build_definitions(settings)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": postgres_database}}}) as instance:
        batch = ingest_file(open_results_database(postgres_database), SAMPLE_DIR / "items.csv", "pg")
        ensure_partitions(instance, batch.chunk_keys)
        outcomes = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="pg-1", stages=["enhanced"])
        assert [o.success for o in outcomes] == [True]
        assert instance.get_materialized_partitions(dg.AssetKey("enhanced_matches")) == set(batch.chunk_keys)
        records = instance.get_records_for_run(outcomes[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        assert len(records) == 12
    summary = open_results_database(postgres_database).project_summary("pg")
    assert summary["items"] == 120 and summary["matched"] >= 60
