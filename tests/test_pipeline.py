"""The Dagster layer end to end: the inbox sensor, multi-chunk runs, re-runs and crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.defs.assets.enhanced import EnhancedStage
from matching_pipeline.defs.cascade import cascade_sensor
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.defs.sensors import new_items_sensor
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.defs.tags import RANGE_END, RANGE_START, TAG_JOB, TAG_PROJECT, TAG_STAGES
from matching_pipeline.jobs.runner import ensure_partitions, run_stage
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.settings import SAMPLE_DIR, Settings
from tests.helpers import break_chunk, restore_chunk

SAMPLE_ITEMS = pd.read_csv(SAMPLE_DIR / "items.csv", dtype=str, keep_default_na=False)


def drop(settings: Settings, project: str, name: str, content: str | bytes, *, age: float = 10) -> Path:
    """Put a file in the inbox as an upload that finished ``age`` seconds ago and said so with a
    ``.done`` marker (taken at the next tick); ``age=0``: still being written, no marker. The
    settle-time fallback for files without markers is tested in ``test_bad_files.py``."""
    folder = settings.inbox_dir / project
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    past = time.time() - age
    os.utime(path, (past, past))
    if age > 0:
        (folder / f"{name}.done").touch()
    return path


def tick(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    context = dg.build_sensor_context(instance=instance, resources={k: defs.resources[k] for k in ("results", "inbox")})
    result = new_items_sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def materialized(instance: dg.DagsterInstance, asset: str) -> set[str]:
    return instance.get_materialized_partitions(dg.AssetKey(asset))


def test_sensor_turns_a_file_into_chunks_and_batched_runs(settings, defs, instance) -> None:
    rows = pd.concat([SAMPLE_ITEMS] * 3, ignore_index=True).head(305)
    rows["item_id"] = [f"x{i}" for i in range(len(rows))]
    path = drop(settings, "acme", "items.csv", rows.to_csv(index=False))

    result = tick(defs, instance)
    assert isinstance(result, dg.SensorResult)
    keys = list(result.dynamic_partitions_requests[0].partition_keys)
    assert len(keys) == 31 and keys[0] == "b000001:acme:00001" and keys[-1] == "b000001:acme:00031"
    requests = result.run_requests
    per_run = STAGE_SPECS["enhanced"].chunks_per_run
    assert len(requests) == -(-31 // per_run)  # batched, never one run per chunk
    assert requests[0].tags[RANGE_START] == keys[0] and requests[-1].tags[RANGE_END] == keys[-1]
    assert requests[0].tags[TAG_PROJECT] == "acme" and requests[0].job_name == "enhanced_job"
    assert not path.exists() and list((settings.data_dir / "processed" / "acme").iterdir())

    db = open_results_database(settings.database_url)
    assert db.list_batches("acme")[0].item_count == 305

    # The same content again is a no-op: no new batch, no partitions, no runs.
    drop(settings, "acme", "items-again.csv", rows.to_csv(index=False))
    again = tick(defs, instance)
    assert isinstance(again, dg.SkipReason)
    assert len(db.list_batches()) == 1
    assert len(instance.get_dynamic_partitions(chunk_partitions.name)) == 31


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("no_desc.csv", "item_id,title\n1,Drill\n", "column 'description': required column is missing"),
        ("empty.csv", "", "file is empty"),
        ("latin.csv", "item_id,description\n1,ok\n2,Caf\xe9\n".encode("latin-1"), "row 2: byte"),
        ("dupes.csv", "item_id,description\n7,a\n8,b\n7,c\n", "duplicate item_id '7' (rows 1, 3)"),
        ("blank.csv", "item_id,description\n1,a\n2,\n", "row 2, column 'description': required value is empty"),
        ("items.xlsx", "x", "unsupported file type"),
    ],
)
def test_bad_files_are_kept_aside_with_a_reason_and_good_ones_still_go(settings, defs, instance, name, content, expected) -> None:
    drop(settings, "acme", name, content)
    drop(settings, "acme", "good.csv", SAMPLE_ITEMS.head(12).to_csv(index=False), age=5)
    result = tick(defs, instance)

    rejected = settings.data_dir / "rejected" / "acme"
    kept = [p for p in rejected.iterdir() if not p.name.endswith(".reason.txt")]
    assert len(kept) == 1 and kept[0].name.endswith(name)
    reason = (rejected / (kept[0].name + ".reason.txt")).read_text()
    assert name in reason and expected in reason
    assert isinstance(result, dg.SensorResult)
    assert len(result.dynamic_partitions_requests[0].partition_keys) == 2


def test_files_still_being_written_wait_for_the_next_tick(settings, defs, instance) -> None:
    path = drop(settings, "acme", "items.csv", SAMPLE_ITEMS.head(5).to_csv(index=False), age=0)
    assert isinstance(tick(defs, instance), dg.SkipReason)
    assert path.exists()


def ingest(settings: Settings, instance: dg.DagsterInstance, n: int, project: str = "acme"):
    path = settings.data_dir / f"{project}-{n}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE_ITEMS.head(n).to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, project)
    ensure_partitions(instance, batch.chunk_keys)
    return batch


def chunk_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetMaterialization]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return [r.event_log_entry.asset_materialization for r in records]


def test_one_run_covers_many_chunks_with_one_event_per_chunk(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 115)
    outcomes = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])
    assert len(outcomes) == 1 and outcomes[0].success and outcomes[0].chunks == 12

    events = chunk_events(instance, outcomes[0].run_id)
    assert [e.partition for e in events] == batch.chunk_keys
    last = events[-1].metadata
    assert last["items"].value == 5 and last["decided"].value == 5
    first = events[0].metadata
    assert first["items"].value == 10
    assert 0 <= first["match_rate"].value <= 1 and first["duration_s"].value >= 0
    assert materialized(instance, "enhanced_matches") == set(batch.chunk_keys)

    run = instance.get_run_by_id(outcomes[0].run_id)
    assert run.tags[TAG_PROJECT] == "acme" and run.tags[TAG_JOB] == "j1"

    db = open_results_database(settings.database_url)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM match_results WHERE stage='enhanced'")).scalar_one() == 115


def test_a_chunk_can_be_rerun_alone_without_duplicates(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 30)
    run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])
    again = run_stage(defs, instance, "enhanced", batch.chunk_keys[1:2], job_id="j2", stages=["enhanced"])
    assert again[0].success and [e.partition for e in chunk_events(instance, again[0].run_id)] == [batch.chunk_keys[1]]
    db = open_results_database(settings.database_url)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM match_results")).scalar_one() == 30


def test_chunks_finished_before_a_crash_stay_finished(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 80)
    db = open_results_database(settings.database_url)
    saved = break_chunk(settings, batch.chunk_keys[5])  # a chunk whose items vanished fails the run part-way

    failed = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])
    assert not failed[0].success and "has no items" in failed[0].error
    assert materialized(instance, "enhanced_matches") == set(batch.chunk_keys[:5])
    assert db.finished_chunks("enhanced", batch.chunk_keys) == set(batch.chunk_keys[:5])

    restore_chunk(settings, saved)
    todo = [k for k in batch.chunk_keys if k not in db.finished_chunks("enhanced", batch.chunk_keys)]
    resumed = run_stage(defs, instance, "enhanced", todo, job_id="j1", stages=["enhanced"])
    assert resumed[0].success and len(chunk_events(instance, resumed[0].run_id)) == 3
    assert materialized(instance, "enhanced_matches") == set(batch.chunk_keys)


def test_a_block_failing_after_another_was_written_still_reports_that_one(settings, defs, instance, monkeypatch) -> None:
    # Writes trail the matching by one block; a failure must not swallow the block being written.
    rows = pd.concat([SAMPLE_ITEMS] * 5, ignore_index=True).head(510)  # 51 chunks: blocks of 50 and 1
    rows["item_id"] = [f"x{i}" for i in range(len(rows))]
    path = settings.data_dir / "acme-510.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, "acme")
    ensure_partitions(instance, batch.chunk_keys)
    decide, calls = EnhancedStage.decide, []

    def fails_on_the_second_block(self, pending, earlier):
        calls.append(len(pending))
        if len(calls) == 2:
            raise RuntimeError("matcher fell over")
        return decide(self, pending, earlier)

    monkeypatch.setattr(EnhancedStage, "decide", fails_on_the_second_block)
    (outcome,) = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"])
    assert not outcome.success and "matcher fell over" in outcome.error
    first_block = set(batch.chunk_keys[:50])
    assert materialized(instance, "enhanced_matches") == first_block
    assert open_results_database(settings.database_url).finished_chunks("enhanced", batch.chunk_keys) == first_block


def test_a_stage_refuses_chunks_its_predecessor_has_not_decided(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 20)
    outcomes = run_stage(defs, instance, "ai", batch.chunk_keys, job_id="j1", stages=["ai"])
    assert not outcomes[0].success
    assert "enhanced stage has no results" in outcomes[0].error and "materialise enhanced_matches" in outcomes[0].error


def test_cascade_sensor_starts_the_next_stage_on_the_same_chunks(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 20)
    outcome = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j9", stages=["enhanced", "ai", "web_search"])[0]
    run = instance.get_run_by_id(outcome.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="cascade_sensor", dagster_instance=instance, dagster_run=run,
        dagster_event=next(iter(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event,
        resources={"results": defs.resources["results"]},
    )
    (request,) = cascade_sensor(context)
    assert isinstance(request, dg.RunRequest) and request.job_name == "ai_job"
    assert request.tags[RANGE_START] == batch.chunk_keys[0] and request.tags[RANGE_END] == batch.chunk_keys[-1]
    assert request.tags[TAG_JOB] == "j9" and request.tags[TAG_STAGES] == "enhanced,ai,web_search"

    alone = run_stage(defs, instance, "enhanced", batch.chunk_keys[:1], job_id="j10", stages=["enhanced"])[0]
    run = instance.get_run_by_id(alone.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name="cascade_sensor", dagster_instance=instance, dagster_run=run,
        dagster_event=next(iter(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event,
        resources={"results": defs.resources["results"]},
    )
    assert cascade_sensor(context) is None  # the run asked for no later stage


def test_stages_have_distinct_backfill_policies_so_backfills_never_share_a_run() -> None:
    # A stage yields no output, so a downstream stage in the same run would be skipped. Dagster's
    # backfill daemon only groups a parent and child into one run when their policies are equal.
    policies = [spec.backfill_policy for spec in STAGE_SPECS.values()]
    assert len(set(policies)) == len(policies)
    assert all(p.max_partitions_per_run and p.max_partitions_per_run > 1 for p in policies)


def test_loading_the_code_location_leaves_the_model_sdk_unimported() -> None:
    # Every process that loads the code location (webserver, daemon, each run) would otherwise
    # pay for importing the openai SDK, configured or not.
    # Nor scikit-learn (about a second, with the scipy.stats it imports): only building an index
    # needs it, so the AI and web-search run workers, the API and `status` start without it.
    code = (
        "import sys, matching_pipeline.definitions as d; d.build_definitions(); "
        "print('openai' in sys.modules, 'sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False False"


def test_a_cli_started_with_sigint_ignored_can_still_be_stopped_and_its_runs_do_not_stall(tmp_path: Path) -> None:
    # A background job of a shell script starts with SIGINT ignored, and Dagster copies SIGINT's
    # handler to SIGTERM around every in-process run: the process, and every child it started
    # afterwards (Dagster's compute-log tail processes, which it stops with SIGTERM and then waits
    # 30 s for), would ignore SIGTERM. The runner takes the usual handlers back first.
    code = (
        "import signal, subprocess, sys\n"
        "from matching_pipeline.cli import main\n"
        "status = main(['match', '--project', 'demo', '--items', sys.argv[1], '--stages', 'enhanced'])\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "mask = next(l for l in open(f'/proc/{child.pid}/status') if l.startswith('SigIgn')).split()[1]\n"
        "child.kill()\n"
        "print(status, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, int(mask, 16) >> (signal.SIGTERM - 1) & 1)\n"
    )
    env = {**os.environ, "MATCHING_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", code, str(SAMPLE_DIR / "items.csv")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as `cmd &` in a script does
    )
    assert done.returncode == 0, done.stderr
    # Exit 0, SIGTERM handled (not ignored) here, and not ignored by a child started after the run.
    assert done.stdout.strip().splitlines()[-1] == "0 False 0"


def test_cascade_carries_a_redecide_through_the_plan_and_stops_for_a_paused_job(settings, defs, instance) -> None:
    from matching_pipeline.defs.tags import TAG_CONTROL, TAG_PLAN, TAG_REDECIDE

    batch = ingest(settings, instance, 20)
    run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j-re", stages=["enhanced"])
    ai = run_stage(defs, instance, "ai", batch.chunk_keys, job_id="j-re", stages=["enhanced", "ai"])[0]
    instance.add_run_tags(ai.run_id, {TAG_REDECIDE: "failed", TAG_PLAN: "enhanced,ai,web_search", TAG_STAGES: "enhanced,ai"})

    def evaluate(run_id: str):
        run = instance.get_run_by_id(run_id)
        event = next(iter(instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event
        return cascade_sensor(dg.build_run_status_sensor_context(
            sensor_name="cascade_sensor", dagster_instance=instance, dagster_run=run, dagster_event=event,
            resources={"results": defs.resources["results"]}))

    (request,) = evaluate(ai.run_id)
    assert isinstance(request, dg.RunRequest) and request.job_name == "web_search_job"
    assert request.tags[TAG_REDECIDE] == "failed" and request.tags[TAG_PLAN] == "enhanced,ai,web_search"
    assert request.tags[TAG_STAGES] == "enhanced,ai,web_search" and request.tags[TAG_JOB] == "j-re"

    instance.add_run_tags(ai.run_id, {TAG_CONTROL: "paused"})
    assert evaluate(ai.run_id) is None
