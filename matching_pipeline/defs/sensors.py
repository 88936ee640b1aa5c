"""Sensors: new item files become chunks and runs; a finished stage starts the next one."""


from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.jobs import catalog_job, stage_jobs
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.resources import CatalogResource, InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.stages import (
    RANGE_END,
    RANGE_START,
    STAGE_SPECS,
    TAG_BATCH,
    TAG_CONTROL,
    TAG_JOB,
    TAG_PLAN,
    TAG_PROJECT,
    TAG_REDECIDE,
    TAG_STAGES,
    TAG_TRIGGER,
    plan_runs,
    run_tags,
)
from matching_pipeline.results.ingest import scan_inbox, sightings_from_cursor
from matching_pipeline.settings import parse_column_map
from matching_pipeline.results.store import Batch

CARRIED_TAGS = (RANGE_START, RANGE_END, TAG_PROJECT, TAG_BATCH, TAG_JOB, TAG_STAGES, TAG_PLAN, TAG_REDECIDE, TAG_TRIGGER)
"""What a stage's run hands to the next stage's run."""

RECOVERY_AGE = timedelta(minutes=5)
"""A stored batch with no partitions after this long was interrupted mid-tick: finish it."""


def stage_run_requests(batch: Batch, *, job_id: str, stages: Sequence[str] = STAGES) -> list[dg.RunRequest]:
    """Runs that take a batch through its first stage; the cascade sensor does the rest."""
    spec = STAGE_SPECS[stages[0]]
    return [
        dg.RunRequest(
            job_name=spec.job_name,
            run_key=f"{job_id}:{spec.stage}:{first}",
            tags=run_tags(first, last, job_id=job_id, stages=stages),
        )
        for first, last in plan_runs(batch.chunk_keys, spec.chunks_per_run)
    ]


@dg.sensor(
    jobs=[stage_jobs[STAGES[0]]],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Ingests item files from the inbox: one batch per file, one partition per ten items.",
)
def new_items_sensor(
    context: dg.SensorEvaluationContext, results: ResultsDatabaseResource, inbox: InboxResource
) -> dg.SensorResult | dg.SkipReason:
    """The cursor holds the size and mtime each waiting file had when last seen, so a file is
    taken only once it has stopped changing (see ``ingest.py`` for the inbox's conventions)."""
    db = results.get()
    scan = scan_inbox(
        db,
        Path(inbox.inbox_dir),
        Path(inbox.data_dir),
        encoding=inbox.encoding,
        columns=parse_column_map(inbox.columns),
        limits=inbox.field_limits(),
        settle_seconds=inbox.settle_seconds,
        require_done=inbox.require_done,
        seen=sightings_from_cursor(context.cursor),
    )
    context.update_cursor(scan.cursor())
    outcomes = scan.outcomes
    for outcome in outcomes:
        if outcome.note:
            context.log.warning(f"{outcome.path}: {outcome.note}")
        if outcome.error:
            context.log.warning(f"rejected {outcome.path} -> {outcome.moved_to}: {outcome.error}")
        elif outcome.deferred:
            continue
        elif outcome.batch and not outcome.batch.is_new:
            context.log.info(f"{outcome.path.name}: same content as {outcome.batch.label}; nothing to do")
        else:
            context.log.info(f"{outcome.path.name}: {outcome.batch.label}, {outcome.batch.item_count} items")

    fresh = [o.batch for o in outcomes if o.batch and o.batch.is_new]
    cutoff = datetime.now(UTC) - RECOVERY_AGE
    stale = [b for b in db.list_batches() if b.created_at < cutoff]
    known = set(context.instance.get_dynamic_partitions(chunk_partitions.name))
    to_start = _batches_missing_partitions(_unique(fresh + stale), known)
    if not to_start:
        waiting = f"; {len(scan.waiting)} waiting until complete" if scan.waiting else ""
        return dg.SkipReason(f"{len(outcomes)} file(s) taken, no new chunks{waiting}")
    new_keys = [key for batch in to_start for key in batch.chunk_keys if key not in known]
    requests = [
        request for batch in to_start for request in stage_run_requests(batch, job_id=f"{batch.label}-ingest")
    ]
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[chunk_partitions.build_add_request(new_keys)],
    )


def _unique(batches: Iterable[Batch]) -> list[Batch]:
    seen: dict[int, Batch] = {}
    for batch in batches:
        seen.setdefault(batch.id, batch)
    return list(seen.values())


def _batches_missing_partitions(batches: Iterable[Batch], known: set[str]) -> list[Batch]:
    return [b for b in batches if any(key not in known for key in b.chunk_keys)]


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[stage_jobs[stage] for stage in STAGES[:-1]],
    request_jobs=[stage_jobs[stage] for stage in STAGES[1:]],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="When a stage's run succeeds, starts the next stage of its job on the same chunks.",
)
def cascade_sensor(context: dg.RunStatusSensorContext) -> list[dg.RunRequest] | dg.SkipReason:
    """A run lists the job's stages in ``matching/stages``; a re-decide run (retry of failed items,
    catalog re-run) keeps its narrowed ``matching/stages`` and carries the whole plan in
    ``matching/plan``, so the next stage gets the same tags and re-decides the same items.

    The finished run's range is cut by the *next* stage's chunks-per-run (an enhanced run of 200
    chunks becomes two AI runs of 100): each stage's runs stay the size its pool and rate limits
    were planned for."""
    run = context.dagster_run
    if run.tags.get(TAG_CONTROL) in ("paused", "canceled", "failed"):
        return dg.SkipReason(f"job is {run.tags[TAG_CONTROL]}")
    redecide = TAG_REDECIDE in run.tags
    wanted = [s for s in run.tags.get(TAG_PLAN if redecide else TAG_STAGES, "").split(",") if s]
    current = next((s for s, spec in STAGE_SPECS.items() if spec.job_name == run.job_name), None)
    following = [s for s in wanted if current in wanted and wanted.index(s) > wanted.index(current)]
    if not following:
        return dg.SkipReason(f"run {run.run_id} asks for no stage after {current}")
    nxt = following[0]
    carried = {k: v for k, v in run.tags.items() if k in CARRIED_TAGS}
    if redecide:
        carried[TAG_STAGES] = ",".join(wanted[: wanted.index(nxt) + 1])
    spec = STAGE_SPECS[nxt]
    start, end = run.tags.get(RANGE_START), run.tags.get(RANGE_END)
    ranges: list[tuple[str, str]] = []
    if start and end:
        ordered = context.instance.get_dynamic_partitions(chunk_partitions.name)
        if start in ordered and end in ordered:
            ranges = plan_runs(ordered[ordered.index(start) : ordered.index(end) + 1], spec.chunks_per_run)
    if not ranges:  # no range to cut (or its keys are gone): hand the tags on as they are
        return [dg.RunRequest(job_name=spec.job_name, run_key=f"{run.run_id}:{nxt}", tags=carried)]
    return [
        dg.RunRequest(
            job_name=spec.job_name,
            # The first keeps the key it always had, so a sensor restarted across this change
            # never launches a range twice.
            run_key=f"{run.run_id}:{nxt}" if i == 0 else f"{run.run_id}:{nxt}:{first}",
            tags={**carried, RANGE_START: first, RANGE_END: last},
        )
        for i, (first, last) in enumerate(ranges)
    ]


@dg.sensor(
    job=catalog_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Rebuilds the catalog index when the catalog file's content changes.",
)
def catalog_sensor(context: dg.SensorEvaluationContext, catalog_source: CatalogResource) -> dg.SensorResult | dg.SkipReason:
    version = catalog_source.version()
    if context.cursor == version:
        return dg.SkipReason(f"catalog version {version} unchanged")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"catalog-{version}")], cursor=version)
