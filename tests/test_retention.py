"""Retirement of finished chunks from the partition set: what goes, what stays, what comes back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from matching_pipeline.core.models import STAGES, Decision
from matching_pipeline.defs.assets import enhanced as enhanced_module
from matching_pipeline.defs.cascade import cascade_requests
from matching_pipeline.defs.partitions import chunk_partitions, keys_between
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.defs.retention import batches_in_flight, retire_chunks, retire_chunks_schedule
from matching_pipeline.defs.sensors import new_items_sensor
from matching_pipeline.jobs import control
from matching_pipeline.jobs.runner import run_stage
from matching_pipeline.jobs.status import job_status
from matching_pipeline.results.retired import retired_batch_ids
from tests.helpers import Gate, ingest_items


def _age(settings, batch_id: int, days: int) -> None:
    """Make a batch, and every stage's decisions on it, ``days`` old."""
    db = open_results_database(settings.database_url)
    then = datetime.now(UTC) - timedelta(days=days)
    with db.engine.begin() as conn:
        conn.execute(sa.text("UPDATE batches SET created_at = :t WHERE id = :b"), {"t": then, "b": batch_id})
        conn.execute(
            sa.text("UPDATE stage_chunks SET decided_at = :t WHERE chunk_key LIKE :p"),
            {"t": then, "p": f"b{batch_id:06d}:%"},
        )


def _keys(instance: dg.DagsterInstance) -> set[str]:
    return set(instance.get_dynamic_partitions(chunk_partitions.name))


def _run_all(defs, instance, batch, job_id: str) -> None:
    for stage in STAGES:
        outcomes = run_stage(defs, instance, stage, batch.chunk_keys, job_id=job_id, stages=list(STAGES), say=lambda _: None)
        assert outcomes and all(o.success for o in outcomes), outcomes


def test_finished_old_batches_are_retired_still_reported_and_come_back_when_run_again(
    job_settings, job_defs, instance, generated_sample
) -> None:
    db = open_results_database(job_settings.database_url)
    old = ingest_items(job_settings, instance, generated_sample, 45)  # 5 chunks, all stages below
    _run_all(job_defs, instance, old, "old-job")
    young = ingest_items(job_settings, instance, generated_sample, 25, project="beta")  # finished, recent
    _run_all(job_defs, instance, young, "young-job")
    unfinished = ingest_items(job_settings, instance, generated_sample, 15, project="gamma")  # old, enhanced only
    assert run_stage(job_defs, instance, "enhanced", unfinished.chunk_keys, job_id="gamma-job", stages=list(STAGES), say=lambda _: None)[0].success
    _age(job_settings, old.id, 10)
    _age(job_settings, unfinished.id, 10)
    before = job_status(instance, "old-job")
    assert before["status"] == "completed" and before["totalItems"] == 45 and before["processedItems"] == 45

    assert retire_chunks(instance, db, days=0).skipped  # 0 disables
    report = retire_chunks(instance, db, days=7)
    assert report.retired == [old.id] and report.keys_removed == 5 and not report.held
    keys = _keys(instance)
    assert not keys & set(old.chunk_keys)
    assert set(young.chunk_keys) <= keys and set(unfinished.chunk_keys) <= keys
    assert retired_batch_ids(db) == {old.id}
    assert retire_chunks(instance, db, days=7).retired == []  # nothing left to do

    # Results and history stay: the job still reads completed, with the same counts.
    after = job_status(instance, "old-job")
    assert after == before
    assert len(db.final_matches("acme", old.id)) == 45

    # The inbox sensor's recovery of interrupted batches leaves a retired batch alone.
    context = dg.build_sensor_context(instance=instance, resources={k: job_defs.resources[k] for k in ("results", "inbox")})
    assert isinstance(new_items_sensor(context), dg.SkipReason)
    assert not _keys(instance) & set(old.chunk_keys)

    # Running the batch again (the CLI's and API's runner) adds its keys back first.
    again = run_stage(job_defs, instance, "enhanced", old.chunk_keys, job_id="old-again", stages=list(STAGES), say=lambda _: None)
    assert len(again) == 1 and again[0].success and again[0].chunks == 5
    assert set(old.chunk_keys) <= _keys(instance)
    # ...and the cascade carries it on even if the keys went again in between.
    for key in old.chunk_keys:
        instance.delete_dynamic_partition(chunk_partitions.name, key)
    requests = cascade_requests(instance, instance.get_run_by_id(again[0].run_id), db)
    assert isinstance(requests, list) and len(requests) == 1
    assert requests[0].tags["dagster/asset_partition_range_start"] == old.chunk_keys[0]
    assert set(old.chunk_keys) <= _keys(instance)
    # Just re-decided: not idle for the retention period any more, so it is not retired again yet.
    assert retire_chunks(instance, db, days=7).retired == []


def test_a_batch_with_a_run_in_flight_is_held_and_a_retry_re_adds_the_keys_it_needs(
    job_settings, job_defs, instance, generated_sample, monkeypatch
) -> None:
    db = open_results_database(job_settings.database_url)
    batch = ingest_items(job_settings, instance, generated_sample, 30)
    poisoned = {"ITM-000012"}  # chunk 2: its decision carries an error, as a timeout would leave it
    original = enhanced_module.match_enhanced

    def flaky(pending, index, settings_):
        return [
            Decision(d.item_id, None, "error", 0.0, error="index timeout") if d.item_id in poisoned else d
            for d in original(pending, index, settings_)
        ]

    monkeypatch.setattr(enhanced_module, "match_enhanced", flaky)
    _run_all(job_defs, instance, batch, "first")  # every stage finished every chunk, one item failed
    assert job_status(instance, "first")["failedItems"] == 1
    poisoned.clear()

    gate = Gate(monkeypatch, "ai")  # an AI re-run of the batch, held mid-flight
    worker = threading.Thread(
        target=run_stage,
        args=(job_defs, instance, "ai", batch.chunk_keys),
        kwargs={"job_id": "again", "stages": ["ai"], "say": lambda _: None},
    )
    worker.start()
    try:
        assert gate.entered.wait(60)
        _age(job_settings, batch.id, 10)
        assert batches_in_flight(instance) == {batch.id}
        report = retire_chunks(instance, db, days=7)
        assert report.retired == [] and report.held == [batch.id]
        assert set(batch.chunk_keys) <= _keys(instance)
    finally:
        gate.release.set()
        worker.join(120)

    _age(job_settings, batch.id, 10)
    assert retire_chunks(instance, db, days=7).retired == [batch.id]
    assert not _keys(instance) & set(batch.chunk_keys)
    assert job_status(instance, "first")["status"] == "completed"

    # Weeks later, retry the failed item of job "first": its chunk's key comes back and it runs.
    launched = control.retry_failed(instance, "first", defs=job_defs)
    assert launched.runs and not launched.failed
    runs = [instance.get_run_by_id(r) for r in launched.runs]
    assert {r.tags["dagster/asset_partition_range_start"] for r in runs} == {batch.chunk_keys[1]}
    assert batch.chunk_keys[1] in _keys(instance)
    assert job_status(instance, "first")["failedItems"] == 0


def test_keys_between_expands_one_batch_only() -> None:
    assert keys_between("b000003:acme:00002", "b000003:acme:00004") == [
        "b000003:acme:00002",
        "b000003:acme:00003",
        "b000003:acme:00004",
    ]
    assert keys_between("b000003:acme:00002", "b000004:acme:00001") == []
    assert keys_between("not-a-key", "b000003:acme:00001") == []


def test_the_schedule_skips_when_retention_is_disabled(monkeypatch) -> None:
    monkeypatch.setenv("MATCHING_PARTITION_RETENTION_DAYS", "0")
    result = retire_chunks_schedule(dg.build_schedule_context())
    assert isinstance(result, dg.SkipReason)
    monkeypatch.setenv("MATCHING_PARTITION_RETENTION_DAYS", "7")
    assert isinstance(retire_chunks_schedule(dg.build_schedule_context()), dg.RunRequest)


def test_the_catalog_re_run_re_adds_retired_chunks_it_re_runs(instance) -> None:
    from matching_pipeline.defs.schedules import catalog_rerun_requests

    kept, retired = "b000002:acme:00001", "b000001:acme:00002"
    instance.add_dynamic_partitions(chunk_partitions.name, [kept])
    for key in (retired, kept):  # the AI stage's record of each chunk: decided with catalog v1
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="ai_matches", partition=key, metadata={"catalog_version": "v1", "match_rate": 0.5})
        )
    requests = catalog_rerun_requests(instance, "v2")
    assert sorted(r.tags["dagster/asset_partition_range_start"] for r in requests) == [retired, kept]
    assert {retired, kept} <= _keys(instance)
