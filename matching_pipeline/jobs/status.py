"""The job-status view as the job layer serves it: listing and printing (``status`` command).

What a job is and how its facts are read is the Dagster layer's (``defs/job_facts.py``); the view
itself is computed there too (``defs/job_view.py``) because the webhook sensors send it. This
module is what the entry points (CLI, HTTP API) use. See docs/jobs.md.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from matching_pipeline.defs.job_facts import (
    ACTIVE,
    JOB_TYPES,
    STARTED,
    JobFacts,
    list_job_ids,
    load_job,
    ordered_chunks,
    stage_of_run,
)
from matching_pipeline.defs.job_view import job_status as view_of
from matching_pipeline.jobs.pools import reap_dead_runs

__all__ = [
    "ACTIVE",
    "JOB_TYPES",
    "STARTED",
    "JobFacts",
    "cli_status",
    "format_view",
    "job_status",
    "list_job_ids",
    "list_jobs",
    "load_job",
    "stage_of_run",
]


def _reaped(instance: dg.DagsterInstance, facts: JobFacts) -> bool:
    """Fail the job's runs whose process (on this host) is gone: a killed CLI or API process
    leaves its run STARTED for ever, and the job would read ``processing`` with an ETA."""
    live = [r.dagster_run.run_id for r in facts.runs if r.dagster_run.status in STARTED]
    return bool(live) and bool(reap_dead_runs(instance, live))


def job_status(instance: dg.DagsterInstance, job_id: str, *, facts: JobFacts | None = None, now: float | None = None) -> dict[str, Any] | None:
    """The status view of ``job_id`` (``defs/job_view.py``), after reaping its dead runs."""
    facts = facts or load_job(instance, job_id)
    if facts is not None and _reaped(instance, facts):
        facts = load_job(instance, job_id)
    return view_of(instance, job_id, facts=facts, now=now) if facts is not None else None


def list_jobs(instance: dg.DagsterInstance, project: str | None = None) -> list[dict[str, Any]]:
    """Every job's view (of one project), oldest first."""
    keys = ordered_chunks(instance)
    views = []
    for job_id in list_job_ids(instance, project):
        view = job_status(instance, job_id, facts=load_job(instance, job_id, partition_keys=keys))
        if view is not None:
            views.append(view)
    return views


def format_view(view: dict[str, Any]) -> str:
    stage = f"stage {view['currentStage']} ({view['currentStageName']})"
    line = (
        f"{view['id']}  {view['projectId']}  {view['jobType']}  {view['status']}{' (paused)' if view['paused'] else ''}  "
        f"{stage}  {view['processedItems']}/{view['totalItems']} items  {view['progressPercentage']}%  "
        f"{view['matchesFound']} matches  rate {view['matchRate']:.1%}"
    )
    skipped = [s["stage"] for s in view.get("stages", []) if s.get("skippedItems")]
    if skipped:
        line += f"  skipped (not configured): {', '.join(skipped)}"
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
