"""Retirement: the chunk partition set keeps recent and unfinished work only.

Every ten items add a key to the one ``chunks`` dynamic partitions definition, and Dagster
documents at most 100,000 keys per definition (its UI slows well before; every sensor tick and
status read that lists the keys pays for all of them). So, once a day, the chunk keys of batches
that are finished (every stage of the cascade has finished every chunk, per the results
database's ``stage_chunks``), have had no decision for ``MATCHING_PARTITION_RETENTION_DAYS`` days
(default 7; 0 disables) and have no run in flight are deleted from the set, and the batch is
recorded in ``retired_batches`` (``results/retired.py``).

Only keys go: items, decisions, the review queue, runs and their materialisation events stay,
so ``status``, summaries and exports still report the batch (the status view expands a run's
range from the keys themselves, ``partitions.keys_between``). Whatever requests runs for chunk
keys again (the CLI and API, resume and retry, the repair and catalog re-run schedules, the
cascade sensor) adds the keys it needs back first (``partitions.ensure_chunk_keys``); the batch
is then retired again once it has been idle for the retention period once more.

Dagster's public API deletes one key per call (5 ms on SQLite here on an idle machine, 20 ms on a
loaded one; docs/benchmarks.md), so a first pass over 200,000 keys takes 15 to 70 minutes: it runs
as a job, not in a sensor tick with a time limit, and later passes see a day's worth of batches.

Age counts from a batch's *last decision*, not its arrival: a batch re-run yesterday (a retry, a
catalog re-run) keeps its keys for the period again, and between two stages of such a re-run it
is never both idle and old, so the cascade never finds its keys gone in practice (it would add
them back if it did).
"""

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg

from matching_pipeline.defs.job_facts import ACTIVE
from matching_pipeline.defs.partitions import CHUNKS, ensure_chunk_keys
from matching_pipeline.defs.requests import list_requests
from matching_pipeline.defs.resources import ResultsDatabaseResource
from matching_pipeline.defs.schedules import SCHEDULE_TIMEZONE
from matching_pipeline.defs.tags import PARTITION_TAG, RANGE_END, RANGE_START
from matching_pipeline.results.retired import batch_progress, record_retired
from matching_pipeline.results.store import Batch, ResultsDatabase, parse_chunk_key
from matching_pipeline.settings import current_settings

RETENTION_CRON = "15 4 * * *"
"""Daily, after the nightly repair (02:00) and catalog re-run (03:30) schedules."""

BATCHES_PER_GROUP = 50
"""Batches whose keys are deleted between two checks for runs in flight, and recorded together."""

BACKFILL_BUSY = ("REQUESTED", "CANCELING", "FAILING")
"""Backfill statuses (their ``.value``) under which the backfill daemon may still create runs."""


@dataclass
class RetirementReport:
    retired: list[int] = field(default_factory=list)
    """Ids of the batches whose keys were retired by this pass."""
    keys_removed: int = 0
    held: list[int] = field(default_factory=list)
    """Finished, old batches kept because a run for them is in flight."""
    skipped: str | None = None
    """Why nothing was looked at (retention disabled, a backfill in progress)."""

    def summary(self) -> str:
        if self.skipped:
            return f"retention skipped: {self.skipped}"
        held = f"; {len(self.held)} kept for runs in flight" if self.held else ""
        return f"retired {len(self.retired)} batch(es), {self.keys_removed} chunk key(s){held}"


def batches_in_flight(instance: dg.DagsterInstance) -> set[int]:
    """Ids of batches a queued or running run, or a pending job request (``requests.py``: a run
    the daemon has yet to launch), covers, from the partition tags: the matching pipeline's range
    tags, and the single-partition tag of a run launched from the UI."""
    busy: set[int] = set()
    tag_sets = [run.tags for run in instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE)))]
    tag_sets += [request.tags for request in list_requests(instance) if request.state == "pending"]
    for tags in tag_sets:
        ids = [_batch_id(tags.get(tag)) for tag in (RANGE_START, RANGE_END, PARTITION_TAG)]
        found = [i for i in ids if i is not None]
        if found:
            busy.update(range(min(found), max(found) + 1))
    return busy


def _batch_id(key: str | None) -> int | None:
    if not key:
        return None
    try:
        return parse_chunk_key(key)[0]
    except ValueError:
        return None


def backfills_in_progress(instance: dg.DagsterInstance) -> int:
    """Backfills that may still create runs. Which keys they target is not in the public API,
    so while any is in progress nothing is retired (the next daily pass tries again)."""
    return sum(b.status.value in BACKFILL_BUSY for b in instance.get_backfills(limit=200))


def retirable_batches(
    instance: dg.DagsterInstance, db: ResultsDatabase, *, days: int, now: datetime
) -> tuple[list[Batch], list[int], set[str]]:
    """Batches to retire, ids of those held by runs in flight, and the keys present in the set."""
    present = set(instance.get_dynamic_partitions(CHUNKS))
    with_keys = {i for i in map(_batch_id, present) if i is not None}
    cutoff = now - timedelta(days=days)
    candidates = [b for b in db.list_batches() if b.id in with_keys and b.created_at < cutoff]
    done = [
        p.batch
        for p in batch_progress(db, candidates)
        if p.complete and p.last_decided_at is not None and p.last_decided_at < cutoff
    ]
    busy = batches_in_flight(instance)
    return [b for b in done if b.id not in busy], [b.id for b in done if b.id in busy], present


def retire_chunks(
    instance: dg.DagsterInstance,
    db: ResultsDatabase,
    *,
    days: int,
    now: datetime | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> RetirementReport:
    """Delete the chunk keys of finished batches idle for ``days`` days and record them retired."""
    report = RetirementReport()
    if days <= 0:
        report.skipped = "MATCHING_PARTITION_RETENTION_DAYS is 0"
        return report
    if busy_backfills := backfills_in_progress(instance):
        report.skipped = f"{busy_backfills} backfill(s) in progress"
        return report
    batches, report.held, present = retirable_batches(instance, db, days=days, now=now or datetime.now(UTC))
    for start in range(0, len(batches), BATCHES_PER_GROUP):
        busy = batches_in_flight(instance)  # a run may have been requested since the plan
        group = [b for b in batches[start : start + BATCHES_PER_GROUP] if b.id not in busy]
        report.held.extend(b.id for b in batches[start : start + BATCHES_PER_GROUP] if b.id in busy)
        keys = [key for batch in group for key in batch.chunk_keys if key in present]
        for key in keys:
            instance.delete_dynamic_partition(CHUNKS, key)
        record_retired(db, [b.id for b in group])
        # A run requested while the keys went (its requester found them present) gets them back.
        late = batches_in_flight(instance) & {b.id for b in group}
        if late:
            ensure_chunk_keys(instance, _keys_of(b for b in group if b.id in late))
        report.retired.extend(b.id for b in group if b.id not in late)
        report.keys_removed += len(keys)
        say(f"retired {len(report.retired)} of {len(batches)} batch(es), {report.keys_removed} key(s) so far")
    return report


def _keys_of(batches: Iterable[Batch]) -> Sequence[str]:
    return [key for batch in batches for key in batch.chunk_keys]


@dg.op(description="Retire the chunk keys of finished batches idle for MATCHING_PARTITION_RETENTION_DAYS days.")
def retire_finished_chunks(context: dg.OpExecutionContext, results: ResultsDatabaseResource) -> None:
    report = retire_chunks(
        context.instance, results.get(), days=current_settings().partition_retention_days, say=context.log.info
    )
    context.log.info(report.summary())


@dg.job(description="Keeps the chunk partition set small: see defs/retention.py.")
def retire_chunks_job() -> None:
    retire_finished_chunks()


@dg.schedule(
    name="retire_chunks_schedule",
    cron_schedule=RETENTION_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    job=retire_chunks_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: retire the chunk keys of finished batches idle for the retention period.",
)
def retire_chunks_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    if current_settings().partition_retention_days <= 0:
        return dg.SkipReason("MATCHING_PARTITION_RETENTION_DAYS is 0: retention disabled")
    return dg.RunRequest()
