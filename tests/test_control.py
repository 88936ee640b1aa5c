"""Cancel, pause, resume and retry-failed: nothing finished is redone, nothing is lost."""

from __future__ import annotations

import threading

import dagster as dg
import pytest

from matching_pipeline.core.models import Decision
from matching_pipeline.defs.assets import enhanced as enhanced_module
from matching_pipeline.defs.requests import list_requests
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs
from matching_pipeline.defs.tags import TAG_STAGES
from matching_pipeline.jobs import control
from matching_pipeline.jobs.status import job_status
from tests.helpers import Gate, break_chunk, ingest_items, restore_chunk, result_rows


def runs_of(instance: dg.DagsterInstance, job: str, stage: str | None = None) -> list[dg.DagsterRun]:
    runs = instance.get_runs(dg.RunsFilter(tags={"matching/job": job}))
    return [r for r in runs if stage is None or r.job_name == STAGE_SPECS[stage].job_name]


def materializations(instance: dg.DagsterInstance, stage: str) -> int:
    key = dg.AssetKey(STAGE_SPECS[stage].asset_name)
    return len(instance.fetch_materializations(key, limit=10_000).records)


def test_planned_ranges_never_span_a_finished_chunk() -> None:
    ordered = [f"k{i}" for i in range(10)]
    assert plan_runs(["k1", "k2", "k4", "k5", "k6", "k9"], 2, ordered) == [
        ("k1", "k2"), ("k4", "k5"), ("k6", "k6"), ("k9", "k9"),
    ]


def test_cancel_stops_queued_runs_and_the_job_stays_canceled(job_settings, job_defs, instance, generated_sample) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 30)
    job = control.create_job(instance, batch, "all")
    control.cancel_job(instance, job, reason="customer withdrew the list")
    assert not runs_of(instance, job)  # the request never became a run
    (request,) = list_requests(instance, job)
    assert request.state == "canceled" and request.reason == "customer withdrew the list"
    view = job_status(instance, job)
    assert view["status"] == "canceled" and view["error"] == "customer withdrew the list"
    with pytest.raises(control.ControlError):
        control.process_next(instance, job, job_defs)
    with pytest.raises(control.ControlError):
        control.resume_job(instance, job, defs=job_defs)
    with pytest.raises(control.UnknownJob):
        control.cancel_job(instance, "no-such-job")
    assert result_rows(job_settings).empty  # nothing ran


def test_pause_lets_chunks_in_flight_finish_and_resume_runs_only_the_rest(job_settings, job_defs, instance, generated_sample, monkeypatch) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 40)
    job = control.create_job(instance, batch, "all")
    control.process_next(instance, job, job_defs)  # enhanced, in-process
    enhanced_before = result_rows(job_settings).query("stage == 'enhanced'").set_index("item_id")["decided_at"]

    # The AI stage is in flight (held by the gate) when the job is paused.
    gate = Gate(monkeypatch, "ai")
    worker = threading.Thread(target=control.resume_job, args=(instance, job), kwargs={"defs": job_defs})
    worker.start()
    try:
        assert gate.entered.wait(60)
        control.pause_job(instance, job)
        (ai_run,) = [r for r in runs_of(instance, job, "ai") if r.status == dg.DagsterRunStatus.STARTED]
        held = instance.get_run_by_id(ai_run.run_id)
        assert held.tags[TAG_STAGES] == "enhanced,ai" and held.tags["dagster/max_retries"] == "0"
    finally:
        gate.release.set()
        worker.join(120)

    paused = job_status(instance, job)
    assert paused["status"] == "pending" and paused["paused"] is True
    assert [s["doneChunks"] for s in paused["stages"]] == [4, 4, 0]  # in flight finished, nothing new began
    assert not runs_of(instance, job, "web_search")
    with pytest.raises(control.ControlError):
        control.process_next(instance, job, job_defs)

    counts = {stage: materializations(instance, stage) for stage in ("enhanced", "ai")}
    launched = control.resume_job(instance, job, defs=job_defs)
    assert len(launched.runs) == 1 and instance.get_run_by_id(launched.runs[0]).job_name == "web_search_job"
    assert {stage: materializations(instance, stage) for stage in ("enhanced", "ai")} == counts  # nothing redone
    done = job_status(instance, job)
    assert done["status"] == "completed" and done["paused"] is False and done["processedItems"] == 40

    rows = result_rows(job_settings)
    assert len(rows.query("stage == 'enhanced'")) == 40 and not rows.duplicated(["item_id", "stage"]).any()
    after = rows.query("stage == 'enhanced'").set_index("item_id")["decided_at"]
    assert (after == enhanced_before).all()


def test_pause_cancels_queued_runs_without_calling_the_job_canceled(job_settings, job_defs, instance, generated_sample) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 20)
    job = control.create_job(instance, batch, "enhanced")
    control.pause_job(instance, job)
    assert [r.state for r in list_requests(instance, job)] == ["paused"] and not runs_of(instance, job)
    view = job_status(instance, job)
    assert view["status"] == "pending" and view["paused"]
    control.resume_job(instance, job, defs=job_defs)
    assert job_status(instance, job)["status"] == "completed"


def test_retry_redoes_only_failed_chunks_and_within_them_only_failed_items(job_settings, job_defs, instance, generated_sample, monkeypatch) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 50)
    keys = batch.chunk_keys
    poisoned = {"ITM-000012", "ITM-000015", "ITM-000033"}  # chunks 2 and 4
    seen: list[list[str]] = []
    original = enhanced_module.match_enhanced

    def flaky(pending, index, settings_):
        seen.append(list(pending["item_id"]))
        decisions = original(pending, index, settings_)
        return [
            Decision(d.item_id, None, "error", 0.0, error="index timeout") if d.item_id in poisoned else d
            for d in decisions
        ]

    monkeypatch.setattr(enhanced_module, "match_enhanced", flaky)
    saved = break_chunk(job_settings, keys[4])  # and the run dies at chunk 5
    job = control.create_job(instance, batch, "all")
    control.process_next(instance, job, job_defs)
    failed = job_status(instance, job)
    assert failed["status"] == "failed" and failed["failedItems"] == 3 and failed["stages"][0]["doneChunks"] == 4

    restore_chunk(job_settings, saved)
    poisoned.clear()
    seen.clear()
    before_rows = result_rows(job_settings).set_index(["item_id", "stage"])
    before = before_rows["decided_at"]
    clean = [keys[0], keys[2]]  # noqa: F841 - read by the DataFrame.query below (@clean)
    launched = control.retry_failed(instance, job, defs=job_defs)
    assert not launched.failed

    # enhanced re-decided the three failed items and the lost chunk's ten, nothing else
    decided = sorted(i for call in seen for i in call)
    chunk5 = [f"ITM-{n:06d}" for n in range(41, 51)]
    assert decided == sorted(["ITM-000012", "ITM-000015", "ITM-000033", *chunk5])
    enhanced_runs = [instance.get_run_by_id(r) for r in launched.runs if instance.get_run_by_id(r).job_name == "enhanced_job"]
    assert sorted((r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in enhanced_runs) == [
        (keys[1], keys[1]), (keys[3], keys[4]),  # chunk 3 is done: never inside a range
    ]
    assert all(r.tags["matching/redecide"] == "failed" for r in enhanced_runs)

    after = result_rows(job_settings)
    assert after["error"].isna().all() and not after.duplicated(["item_id", "stage"]).any()
    assert len(after.query("stage == 'enhanced'")) == 50
    # Decisions not re-decided are kept as they were (a re-written chunk refreshes only decided_at);
    # chunks without failures were not touched at all.
    kept = after.query("stage == 'enhanced' and item_id not in @decided").set_index(["item_id", "stage"])
    assert (kept["catalog_id"].fillna("") == before_rows.loc[kept.index, "catalog_id"].fillna("")).all()
    untouched = after.query("stage == 'enhanced' and chunk_key in @clean").set_index(["item_id", "stage"])["decided_at"]
    assert len(untouched) == 20 and (untouched == before.loc[untouched.index]).all()
    done = job_status(instance, job)
    assert done["status"] == "completed" and done["failedItems"] == 0 and done["processedItems"] == 50

    with pytest.raises(control.ControlError):
        instance_active = control.create_job(instance, batch, "enhanced")
        control.retry_failed(instance, instance_active, defs=job_defs)  # its run is still queued
