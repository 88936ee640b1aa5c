"""The nightly repair and the catalog re-run plan exactly the unfinished or stale chunks."""

from __future__ import annotations

from matching_pipeline.defs.schedules import catalog_rerun_requests, repair_requests
from matching_pipeline.defs.tags import RANGE_END, RANGE_START, TAG_JOB, TAG_REDECIDE
from matching_pipeline.jobs.runner import run_stage
from tests.helpers import break_chunk, restore_chunk
from tests.test_pipeline import ingest


def test_repair_relaunches_only_the_chunks_a_failed_run_left(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 40)
    saved = break_chunk(settings, batch.chunk_keys[2])
    failed = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j-repair", stages=["enhanced"])
    assert not failed[0].success
    restore_chunk(settings, saved)

    requests = repair_requests(instance, "enhanced", lookback_days=7, stamp="t1")
    assert len(requests) == 1
    tags = requests[0].tags
    assert (tags[RANGE_START], tags[RANGE_END]) == (batch.chunk_keys[2], batch.chunk_keys[3])
    assert tags[TAG_JOB] == "j-repair" and tags[TAG_REDECIDE] == "failed"
    assert repair_requests(instance, "ai", lookback_days=7, stamp="t1") == []  # not a stage of that job


def test_catalog_rerun_targets_chunks_decided_under_another_catalog_version(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 30)
    for stage in ("enhanced", "ai"):
        assert run_stage(defs, instance, stage, batch.chunk_keys, job_id="j-cat", stages=["enhanced", "ai"])[0].success
    version = defs.resources["catalog_source"].version()
    assert catalog_rerun_requests(instance, version) == []

    requests = catalog_rerun_requests(instance, "a-newer-version")
    covered = {(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests}
    assert covered == {(batch.chunk_keys[0], batch.chunk_keys[-1])}
    assert all(r.tags[TAG_REDECIDE] == "unmatched" for r in requests)
