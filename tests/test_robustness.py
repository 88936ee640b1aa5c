"""Issue 10: no orphaned pool slot, no endless or busy wait, cancel stops the process, the per-chunk
time budget, and the smaller defects (progress of failed runs, cascade run size, skip-only runs)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from matching_pipeline.defs.assets.ai import AIStage
from matching_pipeline.defs.budget import ChunkTimeBudgetExceeded, Deadline
from matching_pipeline.defs.cascade import cascade_sensor
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.defs.stages import STAGE_SPECS, run_tags
from matching_pipeline.defs.tags import RANGE_END, RANGE_START, TAG_HOST, TAG_OWNER, TAG_PID, TAG_PID_STARTED
from matching_pipeline.jobs.control import cancel_job
from matching_pipeline.jobs.pools import PoolWaitTimeout, hold_pool_slot, process_gone, process_tags
from matching_pipeline.jobs.runner import ensure_partitions, run_stage
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.settings import SAMPLE_DIR, Settings

SAMPLE_ITEMS = pd.read_csv(SAMPLE_DIR / "items.csv", dtype=str, keep_default_na=False)


@pytest.fixture
def pooled() -> Iterator[dg.DagsterInstance]:
    """An instance whose pools admit one step at a time, as the shipped dagster.yaml says."""
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as instance:
        yield instance


def _dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def _run(instance: dg.DagsterInstance, tags: dict[str, str], status=dg.DagsterRunStatus.STARTED, job: str = "ai_job") -> dg.DagsterRun:
    run = dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), tags=tags, status=status)
    instance.add_run(run)
    return run


def _holders(instance: dg.DagsterInstance, pool: str = "openai") -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(pool).claimed_slots]


# -- pools: dead holders, visible and bounded waits ----------------------------------------------


def test_a_slot_held_by_a_run_whose_process_died_is_freed_and_the_run_failed(pooled: dg.DagsterInstance) -> None:
    dead = _run(pooled, {TAG_HOST: socket.gethostname(), TAG_PID: str(_dead_pid()), TAG_OWNER: "cli"})
    assert hold_pool_slot(pooled, "openai", dead.run_id, "ai_matches", timeout_s=5)
    assert _holders(pooled) == [dead.run_id]

    said: list[str] = []
    mine = str(uuid.uuid4())
    began = time.monotonic()
    assert hold_pool_slot(pooled, "openai", mine, "ai_matches", timeout_s=30, poll_s=0.2, say=said.append)
    assert time.monotonic() - began < 5
    assert _holders(pooled) == [mine]
    assert pooled.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert any("whose process is gone" in line for line in said)


def test_a_wait_on_a_live_holder_names_it_sleeps_and_gives_up_cleanly(pooled: dg.DagsterInstance) -> None:
    live = _run(pooled, {**process_tags("cli"), "matching/job": "b000001-cli-abc"})  # this very process
    assert hold_pool_slot(pooled, "openai", live.run_id, "ai_matches", timeout_s=5)

    said: list[str] = []
    mine = str(uuid.uuid4())
    cpu, began = time.process_time(), time.monotonic()
    with pytest.raises(PoolWaitTimeout, match=rf"pool 'openai', held by run {live.run_id[:8]}"):
        hold_pool_slot(pooled, "openai", mine, "ai_matches", timeout_s=1.5, poll_s=0.3, say=said.append)
    assert 1.4 < time.monotonic() - began < 5
    assert time.process_time() - cpu < 0.75, "the wait must sleep between polls, not spin"
    assert len(said) == 1 and live.run_id[:8] in said[0] and "b000001-cli-abc" in said[0] and "ai_job" in said[0]
    info = pooled.event_log_storage.get_concurrency_info("openai")
    assert mine not in {step.run_id for step in info.pending_steps}  # the claim was withdrawn
    assert _holders(pooled) == [live.run_id] and pooled.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED


def test_a_reused_pid_is_not_taken_for_the_process_that_ran_the_run() -> None:
    mine = process_tags()
    assert not process_gone(mine)
    assert process_gone({**mine, TAG_PID_STARTED: "1"})  # same pid, another start time: not ours
    assert process_gone({**mine, TAG_PID: str(_dead_pid())})
    assert not process_gone({**mine, TAG_HOST: "another-host", TAG_PID: str(_dead_pid())})  # not ours to judge


def test_cancel_stops_the_cli_process_running_the_step_but_never_the_api_server(pooled: dg.DagsterInstance) -> None:
    cli = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    api = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        time.sleep(0.2)  # let /proc show the children
        keys = ["b000001:acme:00001", "b000001:acme:00002"]
        pooled.add_dynamic_partitions(chunk_partitions.name, keys)

        def owned_by(process: subprocess.Popen, owner: str, job: str) -> dg.DagsterRun:
            tags = {**run_tags(keys[0], keys[1], job_id=job, stages=["ai"]), **process_tags(owner), TAG_PID: str(process.pid)}
            tags.pop(TAG_PID_STARTED, None)
            return _run(pooled, tags)

        run = owned_by(cli, "cli", "j-cli")
        assert hold_pool_slot(pooled, "openai", run.run_id, "ai_matches", timeout_s=5)
        cancel_job(pooled, "j-cli")
        assert cli.wait(timeout=15) == -15  # SIGTERM ended the step's process
        assert pooled.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.CANCELED
        assert _holders(pooled) == []

        served = owned_by(api, "api", "j-api")
        cancel_job(pooled, "j-api")
        time.sleep(0.3)
        assert api.poll() is None  # the API server lives on; its run stops at its next block
        assert pooled.get_run_by_id(served.run_id).tags["matching/control"] == "canceled"
    finally:
        for process in (cli, api):
            process.kill()
            process.wait()


# -- the per-chunk time budget -------------------------------------------------------------------


def test_deadline_interrupts_a_pure_python_loop_and_never_fires_after_the_block() -> None:
    began = time.monotonic()
    with pytest.raises(ChunkTimeBudgetExceeded), Deadline(0.2):
        while True:
            pass
    assert time.monotonic() - began < 2
    with Deadline(0.1):
        pass
    time.sleep(0.3)  # nothing arrives once the block is left
    with Deadline(0):  # 0: no budget
        time.sleep(0.05)


def _ingest(settings: Settings, instance: dg.DagsterInstance, copies: int, project: str = "acme"):
    rows = pd.concat([SAMPLE_ITEMS] * copies, ignore_index=True)
    rows["item_id"] = [f"x{i}" for i in range(len(rows))]
    path = settings.data_dir / f"{project}-{len(rows)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, project)
    ensure_partitions(instance, batch.chunk_keys)
    return batch


def test_chunks_out_of_time_fail_alone_while_the_others_are_decided(settings, defs, instance, monkeypatch) -> None:
    batch = _ingest(settings, instance, 6)  # 72 chunks: several AI blocks of about 200 pending items
    assert run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])[0].success
    decide = AIStage.decide
    first_block: list[str] = []

    def hangs_on_the_first_block(self, pending, earlier):
        if batch.chunk_keys[0] in set(pending["chunk_key"]):
            first_block.extend(sorted(set(pending["chunk_key"])))
            while True:  # e.g. a pathological item in pure Python
                pass
        return decide(self, pending, earlier)

    monkeypatch.setattr(AIStage, "decide", hangs_on_the_first_block)
    monkeypatch.setenv("MATCHING_CHUNK_TIME_BUDGET_SECONDS", "0.2")
    began = time.monotonic()
    (outcome,) = run_stage(defs, instance, "ai", batch.chunk_keys, job_id="j1", stages=["ai"])
    assert time.monotonic() - began < 60
    assert not outcome.success
    db = open_results_database(settings.database_url)
    stuck = set(batch.chunk_keys) - db.finished_chunks("ai", batch.chunk_keys)
    assert stuck and set(first_block) <= stuck and len(stuck) < len(batch.chunk_keys)  # the rest went on
    ordered = sorted(stuck)
    assert f"{len(stuck)} chunk(s) ran out of time (MATCHING_CHUNK_TIME_BUDGET_SECONDS=0.2s per chunk): {ordered[0]} .. {ordered[-1]}" in outcome.error
    assert instance.get_materialized_partitions(dg.AssetKey("ai_matches")) == set(batch.chunk_keys) - stuck

    monkeypatch.setattr(AIStage, "decide", decide)
    (again,) = run_stage(defs, instance, "ai", ordered, job_id="j1", stages=["ai"])  # re-run them alone
    assert again.success and again.chunks == len(stuck)
    assert db.finished_chunks("ai", batch.chunk_keys) == set(batch.chunk_keys)


# -- the smaller defects ---------------------------------------------------------------------------


def test_the_cli_does_not_count_a_failed_runs_chunks_as_done(cli_env: Path, capsys, monkeypatch) -> None:
    from matching_pipeline.cli import main

    def falls_over(self, pending, earlier):
        raise RuntimeError("model fell over")

    monkeypatch.setattr(AIStage, "decide", falls_over)
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--stages", "enhanced,ai"]) == 1
    printed = capsys.readouterr().out
    assert "[enhanced] 12/12 chunks" in printed
    ai_line = next(line for line in printed.splitlines() if line.startswith("[ai]") and "FAILED" in line)
    assert ai_line.startswith("[ai] 0/12 chunks") and "FAILED (12 chunks" in ai_line and "model fell over" in ai_line


def test_the_cascade_cuts_an_enhanced_range_into_ai_runs_of_the_ai_stages_size(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    keys = [f"b000007:acme:{i:05d}" for i in range(1, 251)]
    instance.add_dynamic_partitions(chunk_partitions.name, keys)
    per_run = STAGE_SPECS["ai"].chunks_per_run
    enhanced = _run(instance, run_tags(keys[0], keys[199], job_id="j7", stages=["enhanced", "ai"]), dg.DagsterRunStatus.SUCCESS, "enhanced_job")
    context = dg.build_run_status_sensor_context(
        sensor_name="cascade_sensor", dagster_instance=instance, dagster_run=enhanced,
        dagster_event=dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name="enhanced_job"),
        resources={"results": defs.resources["results"]},
    )
    requests = cascade_sensor(context)
    assert [(r.tags[RANGE_START], r.tags[RANGE_END]) for r in requests] == [
        (keys[i], keys[min(i + per_run, 200) - 1]) for i in range(0, 200, per_run)
    ]
    assert all(r.job_name == "ai_job" and r.tags["matching/job"] == "j7" for r in requests)
    assert len({r.run_key for r in requests}) == len(requests)


def test_a_stage_that_can_only_skip_does_not_queue_behind_the_pool(settings, defs, instance, monkeypatch) -> None:
    from matching_pipeline.definitions import build_definitions

    assert defs.resolve_assets_def("ai_matches").op.pool is None  # no model configured
    assert defs.resolve_assets_def("web_search_matches").op.pool is None  # no search provider
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert build_definitions(settings).resolve_assets_def("ai_matches").op.pool == "openai"

    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as busy:
        batch = _ingest(settings, busy, 1)
        assert run_stage(defs, busy, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])[0].success
        other = _run(busy, process_tags("cli"))  # another project's long AI run, alive, holds the slot
        assert hold_pool_slot(busy, "openai", other.run_id, "ai_matches", timeout_s=5)
        monkeypatch.setenv("MATCHING_POOL_WAIT_TIMEOUT_SECONDS", "2")
        began = time.monotonic()
        (outcome,) = run_stage(defs, busy, "ai", batch.chunk_keys, job_id="j1", stages=["ai"])
        assert outcome.success and time.monotonic() - began < 30
        assert _holders(busy) == [other.run_id]


def test_a_busy_pool_times_out_with_a_clear_cli_error(cli_env: Path, capsys, monkeypatch) -> None:
    from matching_pipeline.cli import EXIT_POOL_TIMEOUT, main

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # configured: the stage is pooled
    monkeypatch.setenv("MATCHING_POOL_WAIT_TIMEOUT_SECONDS", "1")
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--stages", "enhanced"]) == 0
    with dg.DagsterInstance.get() as instance:
        holder = _run(instance, process_tags("cli"))
        assert hold_pool_slot(instance, "openai", holder.run_id, "ai_matches", timeout_s=5)
    capsys.readouterr()
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--stages", "enhanced,ai"]) == EXIT_POOL_TIMEOUT
    captured = capsys.readouterr()
    assert f"waiting for pool 'openai' (limit 1): held by run {holder.run_id[:8]}" in captured.out
    assert "gave up after 1s waiting for pool 'openai'" in captured.err and "Traceback" not in captured.err


def test_no_thread_is_left_behind_by_the_budget() -> None:
    before = threading.active_count()
    for _ in range(20):
        with Deadline(5):
            pass
    time.sleep(0.1)
    assert threading.active_count() <= before + 1


def test_resume_and_retry_reap_a_run_killed_with_its_process_instead_of_waiting_on_it(settings, defs, instance) -> None:
    from matching_pipeline.jobs.control import resume_job

    batch = _ingest(settings, instance, 1)
    assert run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j-r", stages=["enhanced", "ai"])[0].success
    dead = _run(instance, {
        **run_tags(batch.chunk_keys[0], batch.chunk_keys[-1], job_id="j-r", stages=["enhanced", "ai"]),
        TAG_HOST: socket.gethostname(), TAG_PID: str(_dead_pid()), TAG_OWNER: "cli",
    })
    launched = resume_job(instance, "j-r", defs=defs)
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert len(launched.runs) == 1 and not launched.failed  # the dead run's chunks were done again
    assert open_results_database(settings.database_url).finished_chunks("ai", batch.chunk_keys) == set(batch.chunk_keys)


def test_the_api_answers_503_with_the_holder_when_a_pool_stays_busy(settings, monkeypatch) -> None:
    from starlette.testclient import TestClient

    from matching_pipeline.api import create_app
    from matching_pipeline.definitions import build_definitions

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # configured: the AI stage is pooled
    monkeypatch.setenv("MATCHING_POOL_WAIT_TIMEOUT_SECONDS", "1")
    defs = build_definitions(settings)
    with dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": 1}}}) as busy:
        batch = _ingest(settings, busy, 1)
        assert run_stage(defs, busy, "enhanced", batch.chunk_keys, job_id="j-api", stages=["enhanced", "ai"])[0].success
        holder = _run(busy, process_tags("cli"))
        assert hold_pool_slot(busy, "openai", holder.run_id, "ai_matches", timeout_s=5)
        client = TestClient(create_app(busy, settings=settings, defs=defs, token=""))
        answer = client.post("/api/jobs/j-api/process")
        assert answer.status_code == 503
        assert f"waiting for pool 'openai', held by run {holder.run_id[:8]}" in answer.json()["error"]


def test_deadline_stops_an_event_loop_even_when_a_callback_swallows_the_first_interruption() -> None:
    import asyncio

    async def busy() -> None:
        loop = asyncio.get_running_loop()
        while True:  # callbacks (where asyncio logs and drops exceptions) and task steps, interleaved
            loop.call_soon(sum, range(10_000))
            await asyncio.sleep(0)

    began = time.monotonic()
    with pytest.raises(ChunkTimeBudgetExceeded), Deadline(0.2):
        asyncio.run(busy())
    assert time.monotonic() - began < 5
