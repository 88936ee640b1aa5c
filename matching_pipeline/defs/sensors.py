"""Sensors: new item files become chunks and runs; the catalog file becomes a catalog run.

The cascade from one stage to the next is ``cascade.py``; job requests are ``requests.py``."""


from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.intervals import EVERY_DAEMON_LOOP
from matching_pipeline.defs.jobs import catalog_job, stage_jobs
from matching_pipeline.defs.partitions import CHUNKS, chunk_partitions
from matching_pipeline.defs.resources import CatalogResource, InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.results.ingest import InboxScan, scan_inbox, sightings_from_cursor
from matching_pipeline.results.retired import retired_batch_ids
from matching_pipeline.results.store import Batch

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
    # Every loop of the sensor daemon (defs/intervals.py): a small drop waits for this sensor once.
    minimum_interval_seconds=EVERY_DAEMON_LOOP,
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
        read=inbox.read_options(),
        rules=inbox.rules(),
        seen=sightings_from_cursor(context.cursor),
    )
    context.update_cursor(scan.cursor())
    cutoff = datetime.now(UTC) - RECOVERY_AGE
    retired = retired_batch_ids(db)  # keys removed on purpose (defs/retention.py), not lost mid-tick
    stale = [b for b in db.list_batches() if b.created_at < cutoff and b.id not in retired]
    return start_scanned_batches(context, scan, recover=stale)


def start_scanned_batches(
    context: dg.SensorEvaluationContext, scan: InboxScan, *, recover: Sequence[Batch] = ()
) -> dg.SensorResult | dg.SkipReason:
    """Log what an inbox scan did and start the new batches (and ``recover``) that lack chunks.

    Shared by the local inbox sensor and the object-store one (``object_inbox.py``), so both
    report and start batches alike. Only the local sensor recovers stale batches, whatever inbox
    they came from: two sensors recovering the same batch would launch its runs twice (run keys
    are per sensor).
    """
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
        elif outcome.batch:
            context.log.info(f"{outcome.path.name}: {outcome.batch.label}, {outcome.batch.item_count} items")

    fresh = [o.batch for o in outcomes if o.batch and o.batch.is_new]
    known = set(context.instance.get_dynamic_partitions(CHUNKS))
    to_start = _batches_missing_partitions(_unique([*fresh, *recover]), known)
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


@dg.sensor(
    job=catalog_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Rebuilds the catalog index when the catalog file's content changes.",
)
def catalog_sensor(context: dg.SensorEvaluationContext, catalog_source: CatalogResource) -> dg.SensorResult | dg.SkipReason:
    """Compares the file's content version with the cursor and, when the sensor has no cursor yet
    (a fresh ``make dev``, a reset sensor), with the catalog asset's latest materialization.

    Rebuilding an unchanged catalog is not free: it costs the index build, and the new
    materialization marks every stage chunk downstream "Unsynced" in the UI although nothing
    they used changed. So only a content change launches a run.
    """
    version = catalog_source.version()
    if context.cursor == version:
        return dg.SkipReason(f"catalog version {version} unchanged")
    if _latest_catalog_version(context.instance) == version:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"catalog version {version} is already materialized"), cursor=version
        )
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"catalog-{version}")], cursor=version)


def _latest_catalog_version(instance: dg.DagsterInstance) -> str | None:
    """The ``catalog_version`` the catalog asset's latest materialization recorded, if any."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("catalog")), limit=1, ascending=False
    ).records
    materialization = records[0].asset_materialization if records else None
    value = materialization.metadata.get("catalog_version") if materialization else None
    return str(value.value) if value is not None else None
