"""The ``evaluation`` asset and its check, materialised against a real instance and database."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from matching_pipeline.defs.assets.evaluation import evaluation, precision_on_labels
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.jobs.runner import ensure_partitions, run_stage
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.settings import SAMPLE_DIR, Settings


def test_evaluation_asset_reports_each_labelled_project_and_the_check_warns_below_target(
    settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance
) -> None:
    db = open_results_database(settings.database_url)
    batch = ingest_file(db, SAMPLE_DIR / "items.csv", "demo")
    ensure_partitions(instance, batch.chunk_keys)
    assert all(o.success for o in run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="ev-1", stages=["enhanced"]))

    # Labels that contradict five of the stage's accepts: precision on them is at most (n-5)/n < 0.99.
    truth = pd.read_csv(SAMPLE_DIR / "truth.csv", dtype=str, keep_default_na=False)
    final = db.final_matches("demo")
    accepted = final[final["catalog_id"].notna()]["item_id"].head(5).tolist()
    labels = truth.copy()
    labels.loc[labels["item_id"].isin(accepted), "catalog_id"] = "none"
    settings.labels_dir.mkdir(parents=True)
    labels.to_csv(settings.labels_dir / "demo.csv", index=False)
    (settings.labels_dir / "ghost.csv").write_text("item_id,catalog_id\nx,y\n")  # no such project: skipped

    result = dg.materialize(
        [evaluation, precision_on_labels],
        instance=instance,
        resources={k: defs.resources[k] for k in ("results", "catalog_source", "evaluation_config")},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("evaluation")[0].metadata
    assert metadata["projects_evaluated"].value == 1
    projects = metadata["projects"].value
    assert set(projects) == {"demo"}
    n = int(final["catalog_id"].notna().sum())
    assert projects["demo"]["labelled"] == n and projects["demo"]["precision"] == round((n - 5) / n, 4)
    assert metadata["demo/precision"].value == round((n - 5) / n, 4)
    chart = settings.evaluation_dir / "demo" / "precision_coverage.png"
    assert metadata["demo/chart"].value == str(chart) and chart.read_bytes().startswith(b"\x89PNG")
    assert (settings.evaluation_dir / "demo" / "evaluation.json").exists()

    [check] = result.get_asset_check_evaluations()
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert f"demo: precision {(n - 5) / n:.3f} < 0.99" in check.description

    # With the true labels the same check passes.
    truth.to_csv(settings.labels_dir / "demo.csv", index=False)
    again = dg.materialize(
        [evaluation, precision_on_labels],
        instance=instance,
        resources={k: defs.resources[k] for k in ("results", "catalog_source", "evaluation_config")},
    )
    [check] = again.get_asset_check_evaluations()
    assert check.passed is True, check.description


def test_target_precision_is_configured_once_and_reaches_the_check(monkeypatch, tmp_path) -> None:
    from matching_pipeline.definitions import build_definitions

    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MATCHING_TARGET_PRECISION", "0.95")
    settings = Settings.from_env()
    assert settings.target_precision == 0.95
    resource = build_definitions(settings).resources["evaluation_config"]
    assert (resource.target_precision, resource.labels_dir) == (0.95, str(tmp_path / "labels"))
    monkeypatch.setenv("MATCHING_TARGET_PRECISION", "99")
    with pytest.raises(ValueError, match="MATCHING_TARGET_PRECISION='99': Input should be less than or equal to 1"):
        Settings.from_env()
