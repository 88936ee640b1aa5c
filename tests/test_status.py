"""The job-status view over the Dagster instance: before, during, after a failure and after resume.

Also holds the small helpers the other job tests share (a generated catalog and item list, a
gate that holds a stage mid-job, chunk breakage), so those tests need no fixture file of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline import control
from matching_pipeline.defs import stages as stages_module
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.ingest import ingest_file
from matching_pipeline.sample_data import write_sample
from matching_pipeline.settings import Settings
from matching_pipeline.status import TAG_CONTROL, job_status, list_jobs

# -- shared helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def generated_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small catalog and item list with known answers, independent of the bundled sample."""
    return write_sample(tmp_path_factory.mktemp("sample"), n_catalog=300, n_items=120, seed=3)


@pytest.fixture
def settings(tmp_path: Path, generated_sample: dict[str, Path]) -> Settings:
    data = tmp_path / "data"
    data.mkdir(parents=True)
    return Settings(
        data_dir=data,
        inbox_dir=data / "inbox",
        database_url=f"sqlite:///{data / 'results.db'}",
        catalog_path=generated_sample["catalog"],
    )


def ingest_items(settings: Settings, instance: dg.DagsterInstance, sample: dict[str, Path], n: int, project: str = "acme"):
    frame = pd.read_csv(sample["items"], dtype=str, keep_default_na=False).head(n)
    path = settings.data_dir / f"{project}-{n}.csv"
    frame.to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, project)
    from matching_pipeline.runner import ensure_partitions

    ensure_partitions(instance, batch.chunk_keys)
    return batch


class Gate:
    """Holds a stage before it decides anything, so a test can look at a job mid-flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: str):
        self.entered = threading.Event()
        self.release = threading.Event()
        original = stages_module.pending_items

        def gated(db, which, keys, frame):
            if which == stage:
                self.entered.set()
                assert self.release.wait(60), "gate never released"
            return original(db, which, keys, frame)

        monkeypatch.setattr(stages_module, "pending_items", gated)


def break_chunk(settings: Settings, key: str) -> list[dict]:
    """Remove a chunk's items so that a run fails when it reaches that chunk; returns them."""
    db = open_results_database(settings.database_url)
    with db.engine.begin() as conn:
        saved = [dict(r) for r in conn.execute(sa.text("SELECT * FROM items WHERE chunk_key = :k"), {"k": key}).mappings()]
        conn.execute(sa.text("DELETE FROM items WHERE chunk_key = :k"), {"k": key})
    return saved


def restore_chunk(settings: Settings, saved: list[dict]) -> None:
    db = open_results_database(settings.database_url)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO items VALUES (:project, :item_id, :batch_id, :chunk_key, :position, :description, "
                ":part_number, :manufacturer, :gtin, :extra)"
            ),
            [r | {"extra": r["extra"] if isinstance(r["extra"], str) else "{}"} for r in saved],
        )


def result_rows(settings: Settings) -> pd.DataFrame:
    db = open_results_database(settings.database_url)
    with db.engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT item_id, stage, chunk_key, catalog_id, error, decided_at FROM match_results"), conn)


class NoSubmit(control.Submitter):
    """Submits like the API does; kept as a name so tests read clearly."""


def wait_for(predicate, timeout: float = 60, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture
def job_defs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL", "MATCHING_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    from matching_pipeline.definitions import build_definitions

    return build_definitions(settings)


@pytest.fixture
def job_instance() -> Iterator[dg.DagsterInstance]:
    """A real SQLite instance with the queued run coordinator (as ``dagster dev`` has)."""
    with dg.instance_for_test() as instance:
        yield instance


# -- tests ---------------------------------------------------------------------------------------


def test_status_before_during_after_failure_and_after_resume(settings, job_defs, job_instance, generated_sample, monkeypatch) -> None:
    instance = job_instance
    batch = ingest_items(settings, instance, generated_sample, 45)  # 5 chunks, the last one short
    job = control.create_job(instance, batch, "all")

    before = job_status(instance, job)
    assert before["status"] == "pending" and before["jobType"] == "all" and before["projectId"] == "acme"
    assert before["progressPercentage"] == 0 and before["processedItems"] == 0 and before["startedAt"] is None
    assert before["currentStage"] == 1 and before["currentStageName"] == "enhanced" and before["totalChunks"] == 5
    assert before["runs"] == {"QUEUED": 1}

    # The queued enhanced run is claimed and fails part-way: chunk 4 lost its items.
    saved = break_chunk(settings, batch.chunk_keys[3])
    _, message = control.process_next(instance, job, job_defs)
    assert "failed" in message
    failed = job_status(instance, job)
    assert failed["status"] == "failed" and "has no items" in failed["error"]
    # Chunks no stage has reported yet count as full (10 items) until one does.
    assert failed["stages"][0]["doneChunks"] == 3 and failed["totalItems"] == 50
    assert failed["progressPercentage"] == pytest.approx(100 * 30 / 150, abs=0.1)
    assert failed["completedAt"] and failed["startedAt"] and failed["estimatedCompletion"] is None
    assert failed["processedItems"] == 0 and failed["currentStageName"] == "enhanced"

    # Resume with the chunk back, and look while the AI stage is held mid-job.
    restore_chunk(settings, saved)
    gate = Gate(monkeypatch, "ai")
    worker = threading.Thread(target=control.resume_job, args=(instance, job), kwargs={"defs": job_defs})
    worker.start()
    try:
        assert gate.entered.wait(60)
        during = wait_for(lambda: (v := job_status(instance, job))["status"] == "processing" and v)
        assert during["stages"][0]["doneChunks"] == 5 and during["totalItems"] == 45
        assert during["currentStage"] == 2 and during["currentStageName"] == "ai"
        assert during["progressPercentage"] == pytest.approx(100 / 3, abs=0.1)
        assert during["estimatedCompletion"] and during["completedAt"] is None and during["error"] is None
        assert during["matchesFound"] == during["stages"][0]["matched"] > 0
    finally:
        gate.release.set()
        worker.join(120)

    done = job_status(instance, job)
    assert done["status"] == "completed" and done["error"] is None
    assert done["processedItems"] == 45 and done["progressPercentage"] == 100.0
    assert done["currentStageName"] == "web_search" and done["completedAt"] >= done["startedAt"]
    rows = result_rows(settings)
    assert len(rows[rows.stage == "enhanced"]) == 45 and not rows.duplicated(["item_id", "stage"]).any()
    matched = rows.groupby("item_id")["catalog_id"].apply(lambda s: s.notna().any()).sum()
    assert done["matchesFound"] == matched and done["matchRate"] == pytest.approx(matched / 45, abs=1e-3)


def test_jobs_of_a_project_and_the_status_command(settings, job_defs, generated_sample, tmp_path, monkeypatch, capsys) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATCHING_DATA_DIR", str(settings.data_dir))
    instance = dg.DagsterInstance.get()
    batch = ingest_items(settings, instance, generated_sample, 20, project="globex")
    job = control.create_job(instance, batch, "enhanced")
    control.process_next(instance, job, job_defs)
    other = control.create_job(instance, batch, "ai")
    control.cancel_job(instance, other)

    views = {v["id"]: v for v in list_jobs(instance, "globex")}
    assert views[job]["status"] == "completed" and views[job]["jobType"] == "enhanced"
    assert views[other]["status"] == "canceled" and views[other]["jobType"] == "ai"
    assert list_jobs(instance, "nobody") == []

    from matching_pipeline.cli import main

    assert main(["status", "--job", job, "--json"]) == 0
    import json

    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == job and shown["status"] == "completed" and shown["totalItems"] == 20
    assert main(["status", "--project", "globex"]) == 0
    text = capsys.readouterr().out
    assert job in text and other in text and "canceled" in text
    assert main(["status", "--job", "missing"]) == 2
    assert all(r.dagster_run.tags.get(TAG_CONTROL) == "canceled" for r in instance.get_run_records(dg.RunsFilter(tags={"matching/job": other})))
    instance.dispose()
