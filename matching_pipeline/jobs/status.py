"""The job-status view: the old ``MatchingJob`` row, computed from the Dagster instance alone.

A *job* is the set of runs tagged ``matching/job=<id>`` (see docs/jobs.md). Everything below is
read from Dagster's storage: the job's runs and their tags, the ordered keys of the ``chunks``
dynamic partitions, and the per-chunk ``AssetMaterialization`` events (with their metadata) that
those runs wrote. There is no second job table, so the view cannot disagree with the Dagster UI.

- **Chunk set**: the union of the partition ranges (``dagster/asset_partition_range_start`` ..
  ``_end``) of every run of the job, whatever its status (queued, canceled by a pause or claimed by
  ``/process`` included): the runs are created up front by the sensor, the CLI or the API, so the
  ranges cover the whole batch from the start.
- **Stages**: the union of the ``matching/stages`` and ``matching/plan`` tags of those runs.
- **Done**: a chunk is done for a stage when a run of the job materialised that stage's asset for
  it. ``processedItems`` counts items whose chunk is done for every stage of the job;
  ``progressPercentage`` counts item-stage decisions, so it moves within a stage too.
- **Control**: ``matching/control`` on the job's runs (``paused``, ``resumed``, ``canceled``,
  ``failed``), written by ``control.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.stages import (
    RANGE_END,
    RANGE_START,
    STAGE_SPECS,
    TAG_BATCH,
    TAG_CONTROL,
    TAG_JOB,
    TAG_PLAN,
    TAG_PROJECT,
    TAG_STAGES,
)
from matching_pipeline.results.store import CHUNK_SIZE

TAG_SUPERSEDED = "matching/superseded"
"""A queued run whose chunks ``/process`` executed in-process instead: not a cancellation."""
TAG_REASON = "matching/reason"
"""Why a job was canceled or marked failed (PATCH body ``reason``)."""

WILL_RETRY = "dagster/will_retry"
_CONTROL_PRIORITY = {"resumed": 0, "paused": 1, "failed": 2, "canceled": 3}

JOB_TYPES = {"enhanced": ("enhanced",), "ai": ("ai",), "web-search": ("web_search",), "all": STAGES}
"""``jobType`` of the old API to the stages it runs."""

ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.MANAGED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
STARTED = {dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}


def job_type(stages: Sequence[str]) -> str:
    for name, wanted in JOB_TYPES.items():
        if tuple(stages) == tuple(wanted):
            return name
    return ",".join(s.replace("_", "-") for s in stages)


def stage_of_job_name(job_name: str) -> str | None:
    return next((s for s, spec in STAGE_SPECS.items() if spec.job_name == job_name), None)


@dataclass
class ChunkStage:
    """The latest materialisation of one stage for one chunk by this job."""

    items: int
    decided: int
    matched: int
    passed_through: int
    errors: int
    order: tuple[float, int]


@dataclass
class JobFacts:
    """Everything the view is computed from; ``control.py`` plans its runs from the same facts."""

    job_id: str
    project: str
    batch: str
    stages: list[str]
    chunks: list[str]
    runs: list[dg.RunRecord]
    done: dict[str, dict[str, ChunkStage]] = field(default_factory=dict)
    """``{stage: {chunk: ChunkStage}}``"""
    control: str | None = None
    reason: str | None = None

    def run_stage(self, record: dg.RunRecord) -> str | None:
        return stage_of_job_name(record.dagster_run.job_name)

    def items_in(self, chunk: str) -> int:
        for stage in STAGES:
            if chunk in self.done.get(stage, {}):
                return self.done[stage][chunk].items
        return CHUNK_SIZE

    def unfinished(self, stage: str) -> list[str]:
        done = self.done.get(stage, {})
        return [c for c in self.chunks if c not in done]

    def with_item_errors(self, stage: str) -> list[str]:
        return [c for c, s in self.done.get(stage, {}).items() if s.errors]

    def active_runs(self) -> list[dg.RunRecord]:
        return [r for r in self.runs if r.dagster_run.status in ACTIVE]

    def range_of(self, record: dg.RunRecord, ordered: Sequence[str] | None = None) -> list[str]:
        tags = record.dagster_run.tags
        return _expand(tags.get(RANGE_START), tags.get(RANGE_END), ordered or self.chunks)


_cache_lock = threading.Lock()
_finished_run_events: dict[str, list[tuple[tuple[float, int], str, str, dict[str, Any]]]] = {}
"""Materialisations of finished runs never change: keep them per process (the API polls)."""


def _materializations(instance: dg.DagsterInstance, record: dg.RunRecord) -> list[tuple[tuple[float, int], str, str, dict[str, Any]]]:
    run = record.dagster_run
    key = f"{id(instance)}:{run.run_id}"
    if run.is_finished:
        with _cache_lock:
            if key in _finished_run_events:
                return _finished_run_events[key]
    events = []
    connection = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    for event_record in connection.records:
        materialization = event_record.event_log_entry.asset_materialization
        if materialization is None or materialization.partition is None:
            continue
        metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        # Ordered by time: SQLite storage numbers events per run, so storage ids do not compare across runs.
        order = (event_record.event_log_entry.timestamp, event_record.storage_id)
        events.append((order, materialization.asset_key.to_user_string(), materialization.partition, metadata))
    if run.is_finished:
        with _cache_lock:
            if len(_finished_run_events) > 5000:
                _finished_run_events.clear()
            _finished_run_events[key] = events
    return events


def _expand(first: str | None, last: str | None, ordered: Sequence[str]) -> list[str]:
    if not first or not last:
        return []
    try:
        i, j = ordered.index(first), ordered.index(last)
    except ValueError:
        return []
    return list(ordered[i : j + 1])


def job_runs(instance: dg.DagsterInstance, job_id: str) -> list[dg.RunRecord]:
    records = instance.get_run_records(dg.RunsFilter(tags={TAG_JOB: job_id}))
    return sorted(records, key=lambda r: r.create_timestamp)


def load_job(instance: dg.DagsterInstance, job_id: str, *, partition_keys: Sequence[str] | None = None) -> JobFacts | None:
    """The facts of job ``job_id``, or None when no run carries that id."""
    runs = job_runs(instance, job_id)
    if not runs:
        return None
    ordered = list(partition_keys if partition_keys is not None else instance.get_dynamic_partitions(chunk_partitions.name))
    position = {key: i for i, key in enumerate(ordered)}
    chunks: set[str] = set()
    wanted: set[str] = set()
    control = reason = None
    for record in runs:
        tags = record.dagster_run.tags
        first, last = tags.get(RANGE_START), tags.get(RANGE_END)
        if first in position and last in position:
            chunks.update(ordered[position[first] : position[last] + 1])
        for tag in (TAG_STAGES, TAG_PLAN):
            wanted.update(s for s in tags.get(tag, "").split(",") if s in STAGES)
        stage = stage_of_job_name(record.dagster_run.job_name)
        if stage:
            wanted.add(stage)
        value = tags.get(TAG_CONTROL)
        if value in _CONTROL_PRIORITY and _CONTROL_PRIORITY[value] > _CONTROL_PRIORITY.get(control or "", -1):
            control, reason = value, tags.get(TAG_REASON)
    tags = runs[0].dagster_run.tags
    facts = JobFacts(
        job_id=job_id,
        project=tags.get(TAG_PROJECT, ""),
        batch=tags.get(TAG_BATCH, ""),
        stages=[s for s in STAGES if s in wanted],
        chunks=sorted(chunks, key=position.__getitem__),
        runs=runs,
        control=control,
        reason=reason,
    )
    job_chunks = set(facts.chunks)
    assets = {spec.asset_name: stage for stage, spec in STAGE_SPECS.items()}
    for record in runs:
        for order, asset, partition, metadata in _materializations(instance, record):
            stage = assets.get(asset)
            if stage is None or partition not in job_chunks:
                continue
            previous = facts.done.setdefault(stage, {}).get(partition)
            if previous and previous.order > order:
                continue
            facts.done[stage][partition] = ChunkStage(
                items=int(metadata.get("items", CHUNK_SIZE) or 0),
                decided=int(metadata.get("decided", 0) or 0),
                matched=int(metadata.get("matched", 0) or 0),
                passed_through=int(metadata.get("passed_through", 0) or 0),
                errors=int(metadata.get("errors", 0) or 0),
                order=order,
            )
    return facts


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def _active_seconds(runs: Iterable[dg.RunRecord], now: float) -> float:
    """Wall time during which at least one run of the job was executing (pauses excluded)."""
    spans = sorted((r.start_time, r.end_time or now) for r in runs if r.start_time)
    total, current_start, current_end = 0.0, None, None
    for start, end in spans:
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total


def _run_error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.message:
            return event.message.strip()
    return "run failed"


def _counts_against(facts: JobFacts, record: dg.RunRecord) -> bool:
    """A finished, unsuccessful run matters only while some of its chunks are still not done."""
    tags = record.dagster_run.tags
    if tags.get(TAG_SUPERSEDED) or tags.get(TAG_CONTROL) in ("paused", "resumed"):
        return False
    if tags.get(WILL_RETRY) == "true":
        return False
    stage = facts.run_stage(record)
    done = facts.done.get(stage or "", {})
    return any(c not in done for c in facts.range_of(record))


def job_status(instance: dg.DagsterInstance, job_id: str, *, facts: JobFacts | None = None, now: float | None = None) -> dict[str, Any] | None:
    """The status view of job ``job_id`` in the old API's shape (camelCase), or None if unknown."""
    facts = facts or load_job(instance, job_id)
    if facts is None:
        return None
    now = now or time.time()
    stages = facts.stages or list(STAGES)
    items = {c: facts.items_in(c) for c in facts.chunks}
    total_items = sum(items.values())
    per_stage = []
    units_done = 0
    for stage in stages:
        done = facts.done.get(stage, {})
        done_items = sum(items[c] for c in done)
        units_done += done_items
        per_stage.append(
            {
                "stage": stage,
                "totalChunks": len(facts.chunks),
                "doneChunks": len(done),
                "processedItems": done_items,
                "matched": sum(s.matched for s in done.values()),
                "failedItems": sum(s.errors for s in done.values()),
            }
        )
    units_total = total_items * len(stages)
    complete = bool(facts.chunks) and all(len(facts.done.get(s, {})) == len(facts.chunks) for s in stages)
    processed = sum(items[c] for c in facts.chunks if all(c in facts.done.get(s, {}) for s in stages))
    current = next((s for s in stages if len(facts.done.get(s, {})) < len(facts.chunks)), stages[-1])

    matches = sum(s["matched"] for s in per_stage)
    reached_items = reached_matched = 0
    for chunk in facts.chunks:
        furthest = next((facts.done[s][chunk] for s in reversed(stages) if chunk in facts.done.get(s, {})), None)
        if furthest:
            reached_items += furthest.items
            reached_matched += furthest.passed_through + furthest.matched

    active = facts.active_runs()
    failed = [r for r in facts.runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE and _counts_against(facts, r)]
    canceled = [r for r in facts.runs if r.dagster_run.status == dg.DagsterRunStatus.CANCELED and _counts_against(facts, r)]
    paused = facts.control == "paused"
    error = None
    if facts.control == "canceled":
        status = "canceled"
        error = facts.reason
    elif facts.control == "failed":
        status = "failed"
        error = facts.reason or "marked failed"
    elif complete and not active:
        status = "completed"
    elif active:
        started = any(r.dagster_run.status in STARTED for r in active) or units_done > 0
        status = "processing" if started else "pending"
    elif paused:
        status = "pending"
    elif failed:
        status = "failed"
        error = _run_error(instance, failed[-1].dagster_run.run_id)
    elif canceled:
        status = "canceled"
        error = "run canceled"
    else:
        # Between a stage run's success and the cascade sensor's next run.
        status = "processing" if units_done else "pending"

    started_at = min((r.start_time for r in facts.runs if r.start_time), default=None)
    finished = status in ("completed", "failed", "canceled")
    completed_at = max((r.end_time for r in facts.runs if r.end_time), default=None) if finished else None
    estimate = None
    if status == "processing" and 0 < units_done < units_total:
        seconds = _active_seconds(facts.runs, now)
        if seconds > 0:
            estimate = now + (units_total - units_done) * seconds / units_done
    statuses: dict[str, int] = {}
    for record in facts.runs:
        statuses[record.dagster_run.status.value] = statuses.get(record.dagster_run.status.value, 0) + 1
    return {
        "id": facts.job_id,
        "projectId": facts.project,
        "jobType": job_type(stages),
        "status": status,
        "currentStage": STAGES.index(current) + 1,
        "currentStageName": current,
        "totalItems": total_items,
        "processedItems": processed,
        "progressPercentage": round(100.0 * units_done / units_total, 1) if units_total else 0.0,
        "matchesFound": matches,
        "matchRate": round(reached_matched / reached_items, 4) if reached_items else 0.0,
        "startedAt": _iso(started_at),
        "completedAt": _iso(completed_at),
        "estimatedCompletion": _iso(estimate),
        "error": error,
        # Beyond the old row: what the UI shows, for scripts.
        "paused": paused,
        "batch": facts.batch,
        "stages": per_stage,
        "failedItems": sum(s["failedItems"] for s in per_stage),
        "totalChunks": len(facts.chunks),
        "runs": statuses,
    }


def list_job_ids(instance: dg.DagsterInstance, project: str | None = None) -> list[str]:
    """Job ids known to the instance (optionally of one project), oldest first."""
    if project:
        records = instance.get_run_records(dg.RunsFilter(tags={TAG_PROJECT: project}))
    else:
        values = next((v for k, v in instance.get_run_tags(tag_keys=[TAG_JOB]) if k == TAG_JOB), set())
        records = instance.get_run_records(dg.RunsFilter(tags={TAG_JOB: sorted(values)})) if values else []
    first_seen: dict[str, float] = {}
    for record in records:
        job = record.dagster_run.tags.get(TAG_JOB)
        if job:
            stamp = record.create_timestamp.timestamp()
            first_seen[job] = min(first_seen.get(job, stamp), stamp)
    return sorted(first_seen, key=first_seen.__getitem__)


def list_jobs(instance: dg.DagsterInstance, project: str | None = None) -> list[dict[str, Any]]:
    keys = list(instance.get_dynamic_partitions(chunk_partitions.name))
    views = []
    for job_id in list_job_ids(instance, project):
        facts = load_job(instance, job_id, partition_keys=keys)
        if facts:
            views.append(job_status(instance, job_id, facts=facts))
    return views


def format_view(view: dict[str, Any]) -> str:
    stage = f"stage {view['currentStage']} ({view['currentStageName']})"
    line = (
        f"{view['id']}  {view['projectId']}  {view['jobType']}  {view['status']}{' (paused)' if view['paused'] else ''}  "
        f"{stage}  {view['processedItems']}/{view['totalItems']} items  {view['progressPercentage']}%  "
        f"{view['matchesFound']} matches  rate {view['matchRate']:.1%}"
    )
    if view["estimatedCompletion"]:
        line += f"  eta {view['estimatedCompletion']}"
    if view["error"]:
        line += f"\n    error: {view['error']}"
    return line


def cli_status(args: Any, instance: dg.DagsterInstance) -> int:
    """``matching-pipeline status [--project NAME] [--job ID] [--json]``."""
    import json

    if args.job:
        view = job_status(instance, args.job)
        if view is None:
            print(f"job {args.job!r} not found", file=__import__("sys").stderr)
            return 2
        views = [view]
    else:
        views = list_jobs(instance, args.project)
    if args.json:
        print(json.dumps(views[0] if args.job else views, indent=2))
    else:
        print("\n".join(format_view(v) for v in views) if views else "no jobs")
    return 0
