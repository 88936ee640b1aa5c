"""The job-status view over the Dagster instance: before, during, after a failure and after resume."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from matching_pipeline.defs.tags import TAG_CONTROL
from matching_pipeline.jobs import control
from matching_pipeline.jobs.status import job_status, list_jobs
from tests.helpers import Gate, break_chunk, ingest_items, restore_chunk, result_rows, wait_for

# -- tests ---------------------------------------------------------------------------------------


def test_status_before_during_after_failure_and_after_resume(job_settings, job_defs, instance, generated_sample, monkeypatch) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 45)  # 5 chunks, the last one short
    job = control.create_job(instance, batch, "all")

    before = job_status(instance, job)
    assert before["status"] == "pending" and before["jobType"] == "all" and before["projectId"] == "acme"
    assert before["progressPercentage"] == 0 and before["processedItems"] == 0 and before["startedAt"] is None
    assert before["currentStage"] == 1 and before["currentStageName"] == "enhanced" and before["totalChunks"] == 5
    assert before["runs"] == {"QUEUED": 1}

    # The queued enhanced run is claimed and fails part-way: chunk 4 lost its items.
    saved = break_chunk(job_settings, batch.chunk_keys[3])
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
    restore_chunk(job_settings, saved)
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
    rows = result_rows(job_settings)
    assert len(rows[rows.stage == "enhanced"]) == 45 and not rows.duplicated(["item_id", "stage"]).any()
    matched = rows.groupby("item_id")["catalog_id"].apply(lambda s: s.notna().any()).sum()
    assert done["matchesFound"] == matched and done["matchRate"] == pytest.approx(matched / 45, abs=1e-3)


def test_jobs_of_a_project_and_the_status_command(job_settings, job_defs, generated_sample, tmp_path, monkeypatch, capsys) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATCHING_DATA_DIR", str(job_settings.data_dir))
    instance = dg.DagsterInstance.get()
    batch = ingest_items(job_settings, instance, generated_sample, 20, project="globex")
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
