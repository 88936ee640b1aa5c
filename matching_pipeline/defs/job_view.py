"""The job-status view: the old ``MatchingJob`` row, computed from a job's facts (``job_facts.py``).

It lives in the Dagster layer because the webhook sensors send it; the job layer
(``jobs/status.py``) lists and prints it. Field meanings: docs/jobs.md, "Status view".

Status is true in every state: ``failed`` carries the failed run's error; a failed run stops
counting once its chunks are done by another run; a failed run Dagster marked
``dagster/will_retry`` counts as in progress only for a few minutes (``RETRY_GRACE_SECONDS``);
``estimatedCompletion`` is given only while a run of the job is executing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.job_facts import STARTED, JobFacts, job_type, load_job, retry_pending
from matching_pipeline.defs.tags import TAG_CONTROL, TAG_SUPERSEDED

IDLE_NOTE_SECONDS = 600.0
"""A job with work left and nothing running or requested for this long says so in ``error``."""


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def _active_seconds(runs: Iterable[dg.RunRecord], now: float) -> float:
    """Wall time during which at least one run of the job was executing (pauses excluded)."""
    spans = sorted((r.start_time, r.end_time or now) for r in runs if r.start_time)
    total, current_start, current_end = 0.0, 0.0, None
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


def _run_error(instance: dg.DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}
    ).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
                error = error.cause
            return error.message.strip()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.message:
            return event.message.strip()
    return "run failed"


def _counts_against(facts: JobFacts, record: dg.RunRecord, now: float) -> bool:
    """A finished, unsuccessful run matters only while some of its chunks are still not done."""
    tags = record.dagster_run.tags
    if tags.get(TAG_SUPERSEDED) or tags.get(TAG_CONTROL) in ("paused", "resumed"):
        return False
    if retry_pending(record, now):
        return False
    done = facts.done.get(facts.run_stage(record) or "", {})
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
    per_stage: list[dict[str, Any]] = []
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
                # A stage with no model / provider: its chunks are done (the cascade goes on), not decided.
                "skippedItems": sum(s.skipped for s in done.values()),
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
    requested = facts.pending_requests()
    backfill_running = facts.backfill_status in ("REQUESTED", "CANCELING", "FAILING")
    failed = [r for r in facts.runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE and _counts_against(facts, r, now)]
    retrying = [r for r in facts.runs if r.dagster_run.status == dg.DagsterRunStatus.FAILURE and retry_pending(r, now)]
    canceled = [r for r in facts.runs if r.dagster_run.status == dg.DagsterRunStatus.CANCELED and _counts_against(facts, r, now)]
    paused = facts.control == "paused"
    error = None
    last_end = max((r.end_time for r in facts.runs if r.end_time), default=None)
    if facts.control == "canceled":
        status = "canceled"
        error = facts.reason
    elif facts.control == "failed":
        status = "failed"
        error = facts.reason or "marked failed"
    elif complete and not active:
        status = "completed"
    elif active or requested or backfill_running or retrying:
        started = any(r.dagster_run.status in STARTED for r in active) or units_done > 0
        status = "processing" if started else "pending"
    elif paused:
        status = "pending"
    elif failed:
        status = "failed"
        error = _run_error(instance, failed[-1].dagster_run.run_id)
    elif canceled or facts.backfill_status in ("CANCELED",):
        status = "canceled"
        error = "run canceled" if canceled else "backfill canceled"
    elif facts.backfill_status in ("FAILED", "COMPLETED_FAILED"):
        status = "failed"
        error = "backfill failed"
    else:
        # Between a stage run's success and the cascade's next run; say so when that lasts.
        status = "processing" if units_done else "pending"
        if last_end and now - last_end > IDLE_NOTE_SECONDS:
            error = f"nothing has run since {_iso(last_end)}: resume the job to finish its chunks"

    started_at = min((r.start_time for r in facts.runs if r.start_time), default=None)
    finished = status in ("completed", "failed", "canceled")
    completed_at = last_end if finished else None
    estimate = None
    executing = any(r.dagster_run.status in STARTED for r in active)
    if executing and 0 < units_done < units_total:
        seconds = _active_seconds(facts.runs, now)
        if seconds > 0:
            estimate = now + (units_total - units_done) * seconds / units_done
    statuses: dict[str, int] = {}
    for record in facts.runs:
        statuses[record.dagster_run.status.value] = statuses.get(record.dagster_run.status.value, 0) + 1
    if requested:  # requests not yet turned into runs are queued work too
        statuses["QUEUED"] = statuses.get("QUEUED", 0) + len(requested)
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
        "backfill": facts.backfill_status is not None,
    }

