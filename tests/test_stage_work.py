"""Issue 11 items 3, 7 and 9 at the stage level: a skipped stage is visibly skipped, chunks with
nothing pending are recorded in bulk, runs are planned by pending items, the catalog sensor does
not rebuild an unchanged catalog, and the stage assets' checks warn on bad batches."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from matching_pipeline.core.models import Decision
from matching_pipeline.defs import stages as stages_module
from matching_pipeline.defs.assets.catalog import catalog
from matching_pipeline.defs.checks import (
    ERROR_RATE,
    MATCH_RATE_DROP,
    STAGE_CONFIGURED,
    RunTally,
    error_rate_result,
    match_rate_drop_result,
)
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.defs.sensors import catalog_sensor
from matching_pipeline.defs.stages import (
    STAGE_SPECS,
    pending_counts,
    pending_items,
    plan_ranges_by_work,
    run_tags,
)
from matching_pipeline.jobs.status import format_view, job_status
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import SAMPLE_DIR, CheckThresholds, Settings, check_thresholds

SAMPLE_ITEMS = pd.read_csv(SAMPLE_DIR / "items.csv", dtype=str, keep_default_na=False)


def ingest(settings: Settings, instance: dg.DagsterInstance, n: int, project: str = "acme"):
    path = settings.data_dir / f"{project}-{n}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE_ITEMS.head(n).to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, project)
    instance.add_dynamic_partitions("chunks", [k for k in batch.chunk_keys if not instance.has_dynamic_partition("chunks", k)])
    return batch


def run(defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, keys: list[str]) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(STAGE_SPECS[stage].job_name)
    tags = run_tags(keys[0], keys[-1], job_id="j1", stages=list(STAGE_SPECS))
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def metadata_by_chunk(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {
        m.partition: {k: getattr(v, "value", v) for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(_node(result))
    }


def _node(result: dg.ExecuteInProcessResult) -> str:
    stage = next(s for s, spec in STAGE_SPECS.items() if spec.job_name == result.dagster_run.job_name)
    return STAGE_SPECS[stage].asset_name


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_an_unconfigured_stage_is_visibly_skipped_and_the_cascade_goes_on(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 40)
    keys = batch.chunk_keys
    assert run(defs, instance, "enhanced", keys).success
    db = open_results_database(settings.database_url)
    pending = pending_counts(db, "ai", keys)

    ai = run(defs, instance, "ai", keys)  # no OPENAI_* variable: the stage is not configured
    assert ai.success
    meta = metadata_by_chunk(ai)
    assert set(meta) == set(keys)
    for key, m in meta.items():
        assert m["decided"] == 0, "a pass-through is not a decision"
        assert m["skipped_items"] == pending[key] and m["skipped"] is (pending[key] > 0)
    assert sum(pending.values()) > 0
    check = checks(ai)[STAGE_CONFIGURED]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    # Every chunk is recorded as done for the stage, so the next stage can run on it.
    assert db.finished_chunks("ai", keys) == set(keys)

    web = run(defs, instance, "web_search", keys)
    assert web.success and set(metadata_by_chunk(web)) == set(keys)
    assert not checks(web)[STAGE_CONFIGURED].passed
    # The status view says so too, while counting the job as done.
    view = job_status(instance, "j1")
    assert view is not None and view["status"] == "completed"
    by_stage = {s["stage"]: s for s in view["stages"]}
    assert by_stage["ai"]["skippedItems"] == sum(pending.values()) and by_stage["enhanced"]["skippedItems"] == 0
    assert "skipped (not configured): ai, web_search" in format_view(view)
    # The enhanced stage cannot skip: it declares no such check.
    assert STAGE_CONFIGURED not in checks(run(defs, instance, "enhanced", keys[:1]))


def test_chunks_with_nothing_pending_are_recorded_in_bulk_without_deciding(settings, defs, instance, monkeypatch) -> None:
    batch = ingest(settings, instance, 60)
    keys = batch.chunk_keys
    assert run(defs, instance, "enhanced", keys).success
    db = open_results_database(settings.database_url)
    # Settle every item of the first four chunks as the enhanced stage would with an identifier match.
    settled = keys[:4]
    frame = db.load_chunk_items(settled)
    db.replace_results(
        "enhanced",
        {k: [Decision(i, "C1", "gtin", 1.0) for i in frame[frame["chunk_key"] == k]["item_id"]] for k in settled},
        None,
    )
    seen: list[str] = []
    original = stages_module.pending_items

    def spy(db_, stage, block, frame_, **options):
        seen.extend(block)
        return original(db_, stage, block, frame_, **options)

    monkeypatch.setattr(stages_module, "pending_items", spy)
    ai = run(defs, instance, "ai", keys)
    assert ai.success
    meta = metadata_by_chunk(ai)
    assert set(meta) == set(keys)
    for key in settled:
        assert meta[key]["nothing_pending"] is True and meta[key]["decided"] == 0 and meta[key]["match_rate"] == 1.0
        assert meta[key]["passed_through"] == meta[key]["items"] == 10
    assert not set(seen) & set(settled), "chunks with nothing pending went through the per-chunk loop"
    assert set(seen) == set(keys) - set(settled)
    assert db.finished_chunks("ai", keys) == set(keys)


def test_pending_counts_agree_with_the_per_chunk_rule(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 45)
    keys = batch.chunk_keys
    db = open_results_database(settings.database_url)
    assert pending_counts(db, "ai", keys) == {}, "the previous stage has not finished any chunk"
    assert run(defs, instance, "enhanced", keys).success
    counts = pending_counts(db, "ai", keys)
    for key in keys:
        frame = db.load_chunk_items([key])
        assert counts[key] == len(pending_items(db, "ai", [key], frame)[0])
    assert pending_counts(db, "enhanced", keys) == {k: len(db.load_chunk_items([k])) for k in keys}
    # An item a person decided is pending for no later stage, by either rule.
    open_items = [i for k in keys for i in pending_items(db, "ai", [k], db.load_chunk_items([k]))[0]["item_id"]]
    assert open_items, "the sample leaves something for the AI stage"
    db.record_human_decisions(batch.project, {open_items[0]: None}, source="test")
    after = pending_counts(db, "ai", keys)
    assert sum(after.values()) == sum(counts.values()) - 1
    for key in keys:
        frame = db.load_chunk_items([key])
        assert after[key] == len(pending_items(db, "ai", [key], frame)[0])


def test_runs_are_planned_by_pending_items_not_chunk_count() -> None:
    keys = [f"b000001:p:{i:05d}" for i in range(1, 2175)]
    counts = dict.fromkeys(keys, 0)
    for i in range(0, 2174, 9):  # about 250 pending items spread over 2,174 chunks
        counts[keys[i]] = 1
    ranges = plan_ranges_by_work(keys, counts, items_per_run=500)
    assert ranges == [(keys[0], keys[-1])]
    # Ranges cover the keys exactly, in order, each closing once it holds enough pending items.
    ranges = plan_ranges_by_work(keys, counts, items_per_run=100)
    assert len(ranges) == 3 and ranges[0][0] == keys[0] and ranges[-1][1] == keys[-1]
    assert [keys.index(r[0]) for r in ranges[1:]] == [keys.index(r[1]) + 1 for r in ranges[:-1]]
    assert len(plan_ranges_by_work(keys, counts, items_per_run=500, max_chunks_per_run=1000)) == 3
    # Unknown chunks count as full ones.
    assert plan_ranges_by_work(keys[:6], {}, items_per_run=20) == [(keys[0], keys[1]), (keys[2], keys[3]), (keys[4], keys[5])]
    assert plan_ranges_by_work([], counts, items_per_run=10) == []
    with pytest.raises(ValueError):
        plan_ranges_by_work(keys, counts, items_per_run=0)


def test_catalog_sensor_does_not_rebuild_an_unchanged_catalog(tmp_path: Path, instance) -> None:
    from matching_pipeline.definitions import build_definitions

    path = tmp_path / "catalog.csv"
    shutil.copy(SAMPLE_DIR / "catalog.csv", path)
    settings = Settings(data_dir=tmp_path / "data", inbox_dir=tmp_path / "data" / "inbox", database_url=f"sqlite:///{tmp_path / 'r.db'}", catalog_path=path)
    source = build_definitions(settings).resources["catalog_source"]
    assert dg.materialize([catalog], resources={"catalog_source": source}, instance=instance).success

    # A fresh sensor (no cursor, as on the first tick of `make dev`) over an already built version.
    result = catalog_sensor(dg.build_sensor_context(instance=instance, resources={"catalog_source": source}))
    assert isinstance(result, dg.SensorResult) and not result.run_requests and result.cursor == source.version()
    # The next tick keeps skipping on the cursor.
    again = catalog_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"catalog_source": source}))
    assert isinstance(again, dg.SkipReason)

    # A content change is a new version: one run.
    with path.open("a", encoding="utf-8") as handle:
        handle.write("ZZ-NEW-1,Brand new test entry 9000,,,\n")
    changed = catalog_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor, resources={"catalog_source": source}))
    assert isinstance(changed, dg.SensorResult) and len(changed.run_requests) == 1
    assert changed.cursor != result.cursor


def _batch_with_rate(db: ResultsDatabase, project: str, n: int, matched: int, tag: str) -> int:
    frame = pd.DataFrame({"item_id": [f"{tag}-{i}" for i in range(n)], "description": [f"thing {tag} {i}" for i in range(n)]})
    batch = db.add_batch(project, f"{tag}.csv", tag * 8, frame)
    items = db.load_chunk_items(batch.chunk_keys)
    decisions: dict[str, list[Decision]] = {}
    for position, row in enumerate(items.itertuples()):
        decision = Decision(row.item_id, "C1" if position < matched else None, "gtin" if position < matched else "fuzzy", 1.0)
        decisions.setdefault(row.chunk_key, []).append(decision)
    db.replace_results("enhanced", decisions, None)
    return batch.id


def test_match_rate_drop_warns_on_a_batch_far_below_the_projects_recent_ones(tmp_path: Path) -> None:
    db = ResultsDatabase(f"sqlite:///{tmp_path / 'r.db'}")
    ids = [_batch_with_rate(db, "acme", 20, 16, f"ok{i}") for i in range(3)]
    bad = _batch_with_rate(db, "acme", 20, 4, "bad")
    _batch_with_rate(db, "other", 20, 0, "oth")  # another project's batches never count
    thresholds = CheckThresholds()

    tally = RunTally.empty()
    tally.add("acme", bad, decided=20, errors=0, skipped=0)
    result = match_rate_drop_result(db, "enhanced", tally, thresholds)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    rows = result.metadata["batches"].value
    assert rows == [{"project": "acme", "batch": f"b{bad:06d}", "match_rate": 0.2, "recent_mean": 0.8, "recent_batches": 3, "drop": 0.6}]

    fine = RunTally.empty()
    fine.add("acme", ids[-1], decided=20, errors=0, skipped=0)
    assert match_rate_drop_result(db, "enhanced", fine, thresholds).passed
    assert match_rate_drop_result(db, "enhanced", tally, CheckThresholds(max_match_rate_drop=0.7)).passed
    first = RunTally.empty()
    first.add("acme", ids[0], decided=20, errors=0, skipped=0)
    assert match_rate_drop_result(db, "enhanced", first, thresholds).passed, "a first batch has nothing to fall from"


def test_error_rate_warns_per_project_with_thresholds_from_the_environment(monkeypatch) -> None:
    tally = RunTally.empty()
    tally.add("acme", 1, decided=20, errors=3, skipped=0)
    tally.add("other", 2, decided=20, errors=0, skipped=0)
    result = error_rate_result(tally, check_thresholds())
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["projects_over"].value == "acme"
    monkeypatch.setenv("MATCHING_CHECK_MAX_ERROR_RATE", "0.2")
    assert error_rate_result(tally, check_thresholds()).passed
    monkeypatch.setenv("MATCHING_CHECK_MAX_ERROR_RATE", "2")
    with pytest.raises(ValueError):
        check_thresholds()


def test_every_stage_run_reports_its_checks(settings, defs, instance) -> None:
    batch = ingest(settings, instance, 25)
    result = run(defs, instance, "enhanced", batch.chunk_keys)
    evaluations = checks(result)
    assert set(evaluations) == {ERROR_RATE, MATCH_RATE_DROP}
    assert evaluations[ERROR_RATE].passed and evaluations[MATCH_RATE_DROP].passed
    # Stored in the instance's event log, where the UI reads them.
    stored = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    assert {r.event_log_entry.dagster_event.asset_check_evaluation_data.check_name for r in stored} == {ERROR_RATE, MATCH_RATE_DROP}
