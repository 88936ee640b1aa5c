"""Scheduled repairs and re-runs, and the sensor that carries a re-decide through later stages.

Dagster schedules cannot launch backfills, and a schedule targets one job, so each of these yields
range ``RunRequest``s (the same ranges and tags the sensors and ``control.py`` use) for one stage's
job; later stages follow through a run-status sensor:

- ``repair_<stage>_schedule`` (cron ``MATCHING_REPAIR_CRON``, default ``0 2 * * *``): for every
  job created in the last ``MATCHING_REPAIR_LOOKBACK_DAYS`` (default 7) that is idle, not paused,
  canceled or marked failed, re-launches its failed or missing chunks whose earliest failed stage
  is ``<stage>``, re-deciding only failed items (``matching/redecide=failed``) under the job's id.
  ``enhanced`` is offline and cheap: RUNNING by default. ``ai`` and ``web_search`` cost money:
  STOPPED by default.
- ``catalog_rerun_schedule`` (cron ``MATCHING_CATALOG_RERUN_CRON``, default ``30 3 * * *``,
  STOPPED by default: it calls the model and the search API): when the catalog's version differs
  from the one the AI stage decided a chunk with, re-runs the AI stage, then web search, for the
  items still unmatched there (``matching/redecide=unmatched``), as job
  ``<batch>-catalog-<version>``.
Later stages of a re-decide follow through ``cascade_sensor``, which carries the tags along.

No ``from __future__ import annotations`` here: this module defines schedules and sensors.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.job_facts import failed_work, load_job, ordered_chunks, stages_through
from matching_pipeline.defs.jobs import stage_jobs
from matching_pipeline.defs.partitions import ensure_chunk_keys
from matching_pipeline.defs.resources import CatalogResource
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.defs.tags import TAG_JOB, TAG_PLAN, TAG_REDECIDE, TAG_TRIGGER
from matching_pipeline.settings import current_settings

REPAIR_CRON = current_settings().repair_cron
CATALOG_RERUN_CRON = current_settings().catalog_rerun_cron
SCHEDULE_TIMEZONE = current_settings().schedule_timezone
REPAIR_DEFAULTS = {"enhanced": dg.DefaultScheduleStatus.RUNNING}


def repair_requests(instance: dg.DagsterInstance, stage: str, *, lookback_days: int, stamp: str) -> list[dg.RunRequest]:
    """Run requests that re-launch, for ``stage``, the failed or missing chunks of idle jobs."""
    since = datetime.now(UTC) - timedelta(days=lookback_days)
    recent = instance.get_run_records(dg.RunsFilter(created_after=since))
    jobs = sorted({r.dagster_run.tags[TAG_JOB] for r in recent if r.dagster_run.tags.get(TAG_JOB)})
    ordered = ordered_chunks(instance)
    requests = []
    for job_id in jobs:
        facts = load_job(instance, job_id, partition_keys=ordered)
        if facts is None or stage not in facts.stages or facts.active_runs():
            continue
        if facts.control in ("paused", "canceled", "failed"):
            continue
        todo = failed_work(facts).get(stage, [])
        ordered = ensure_chunk_keys(instance, todo, ordered)  # a retired batch's keys come back first
        for first, last in plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, ordered):
            tags = run_tags(first, last, job_id=job_id, stages=stages_through(facts.stages, stage))
            tags.update({TAG_PLAN: ",".join(facts.stages), TAG_REDECIDE: "failed", TAG_TRIGGER: "repair"})
            requests.append(dg.RunRequest(run_key=f"repair:{stamp}:{job_id}:{stage}:{first}", tags=tags))
    return requests


def _repair_schedule(stage: str) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"repair_{stage}_schedule",
        cron_schedule=REPAIR_CRON,
        execution_timezone=SCHEDULE_TIMEZONE,
        job=stage_jobs[stage],
        default_status=REPAIR_DEFAULTS.get(stage, dg.DefaultScheduleStatus.STOPPED),
        description=f"Nightly: re-launch failed or missing {stage} chunks of idle jobs, failed items only.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        stamp = (context.scheduled_execution_time or datetime.now(UTC)).strftime("%Y%m%dT%H%M")
        lookback = current_settings().repair_lookback_days
        requests = repair_requests(context.instance, stage, lookback_days=lookback, stamp=stamp)
        return requests or dg.SkipReason(f"no failed or missing {stage} chunks")

    return _schedule


repair_schedules = [_repair_schedule(stage) for stage in STAGES]


def _latest_ai_versions(instance: dg.DagsterInstance) -> dict[str, tuple[str, float]]:
    """``{chunk: (catalog_version, match_rate)}`` of the AI stage's latest materialisation."""
    latest: dict[str, tuple[str, float]] = {}
    cursor = None
    key = dg.AssetKey(STAGE_SPECS["ai"].asset_name)
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1000, cursor=cursor, ascending=False)
        for record in result.records:
            materialization = record.asset_materialization
            if materialization is None or materialization.partition in latest or materialization.partition is None:
                continue
            metadata = {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
            latest[materialization.partition] = (str(metadata.get("catalog_version", "")), float(str(metadata.get("match_rate", 0) or 0)))
        if not result.has_more:
            return latest
        cursor = result.cursor


def catalog_rerun_requests(instance: dg.DagsterInstance, version: str) -> list[dg.RunRequest]:
    from matching_pipeline.results.store import parse_chunk_key

    ordered = ordered_chunks(instance)
    stale = {c for c, (v, rate) in _latest_ai_versions(instance).items() if v and v != version and rate < 1.0}
    ordered = ensure_chunk_keys(instance, sorted(stale), ordered)  # retired chunks are re-run too
    by_batch: dict[tuple[int, str], list[str]] = {}
    for chunk in ordered:
        if chunk in stale:
            batch, project, _ = parse_chunk_key(chunk)
            by_batch.setdefault((batch, project), []).append(chunk)
    requests = []
    for (batch, _project), chunks in by_batch.items():
        job_id = f"b{batch:06d}-catalog-{version}"
        for first, last in plan_runs(chunks, STAGE_SPECS["ai"].chunks_per_run, ordered):
            tags = run_tags(first, last, job_id=job_id, stages=["ai"])
            tags.update({TAG_PLAN: "ai,web_search", TAG_REDECIDE: "unmatched", TAG_TRIGGER: "catalog"})
            requests.append(dg.RunRequest(run_key=f"catalog:{version}:{first}", tags=tags))
    return requests


@dg.schedule(
    name="catalog_rerun_schedule",
    cron_schedule=CATALOG_RERUN_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    job=stage_jobs["ai"],
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="When the catalog version changed, re-run AI then web search for items still unmatched.",
)
def catalog_rerun_schedule(context: dg.ScheduleEvaluationContext, catalog_source: CatalogResource):
    version = catalog_source.version()
    requests = catalog_rerun_requests(context.instance, version)
    return requests or dg.SkipReason(f"every AI decision already uses catalog version {version}")


schedules = [*repair_schedules, catalog_rerun_schedule]
