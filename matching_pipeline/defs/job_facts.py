"""What a job is, read from the Dagster instance alone (see docs/jobs.md, "What a job is").

A **job** is the set of stage runs that share a *job id*, plus the requests recorded for it that
no run has taken yet (``defs/requests.py``). A run's job id is, in this order:

1. the ``dagster/backfill`` tag: every run of a backfill (launched from the UI or anywhere) is
   one job, whose id is the backfill id;
2. the ``matching/job`` tag: runs started by the inbox sensor, the CLI, the API, the schedules,
   and the runs the cascade sensor starts after any of these (it copies the id on);
3. the run id itself, for a stage run that has neither (one partition or range materialised
   from the UI): the cascade's follow-up runs carry that id in ``matching/job``.

So work started in the UI is a job too, with an id, progress and status, in the status view, the
API and the webhooks. The facts below are what the view, the control actions, the schedules and
the cascade all plan from:

- **chunks**: the union of the job's runs' ranges (``dagster/asset_partition_range_start/_end``,
  or ``dagster/partition`` for a one-partition run), of its requests' ranges, and of the
  backfill's target partitions;
- **stages**: the union of ``matching/stages`` / ``matching/plan`` and the stages the runs
  materialise; a job started in the UI without those tags runs from its first stage to the last;
- **done**: a chunk is done for a stage when a run of the job materialised it, or when *any* run
  materialised it after the job began (a later re-run that finished the job's chunks finishes
  the job: it never stays ``processing`` behind it);
- **control**: ``matching/control`` on the runs, and the state of the job's requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.partitions import chunk_partitions, keys_between
from matching_pipeline.defs.requests import JobRequest, launched_runs, list_requests
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.defs.tags import (
    BACKFILL_TAG,
    PARTITION_TAG,
    RANGE_END,
    RANGE_START,
    TAG_BATCH,
    TAG_CONTROL,
    TAG_JOB,
    TAG_PLAN,
    TAG_PROJECT,
    TAG_REASON,
    TAG_STAGES,
    WILL_RETRY,
)
from matching_pipeline.results.store import CHUNK_SIZE, parse_chunk_key

CHUNKS = chunk_partitions.name or "chunks"
"""Name of the chunk partitions definition (always set: it is a named dynamic definition)."""

RETRY_GRACE_SECONDS = 300.0
"""A failed run marked ``dagster/will_retry=true`` counts as in progress for this long only: a
retry the daemon does not start by then (no daemon running, retries off) never comes."""

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
_ASSET_STAGE = {spec.asset_name: stage for stage, spec in STAGE_SPECS.items()}


def job_type(stages: Sequence[str]) -> str:
    for name, wanted in JOB_TYPES.items():
        if tuple(stages) == tuple(wanted):
            return name
    return ",".join(s.replace("_", "-") for s in stages)


def stage_of_run(run: dg.DagsterRun) -> str | None:
    """The stage a run materialises: by its job (``enhanced_job``...) or, for a run the UI
    launched over the asset graph (``__ASSET_JOB``), by its asset selection."""
    for stage, spec in STAGE_SPECS.items():
        if spec.job_name == run.job_name:
            return stage
    selected = {key.to_user_string() for key in (run.asset_selection or ())}
    return next((s for s in STAGES if STAGE_SPECS[s].asset_name in selected), None)


def job_id_of_run(run: dg.DagsterRun) -> str | None:
    """The job a run belongs to (see the module docstring), or None for a run of no stage."""
    tags = run.tags
    if tags.get(BACKFILL_TAG):
        return tags[BACKFILL_TAG]
    if tags.get(TAG_JOB):
        return tags[TAG_JOB]
    return run.run_id if stage_of_run(run) else None


def expand(first: str | None, last: str | None, ordered: Sequence[str], position: dict[str, int] | None = None) -> list[str]:
    """The keys from ``first`` to ``last`` in ``ordered`` (what a partition range covers)."""
    if not first or not last:
        return []
    position = position if position is not None else {key: i for i, key in enumerate(ordered)}
    if first not in position or last not in position:
        return keys_between(first, last)  # retired from the set (defs/retention.py): the keys tell
    return list(ordered[position[first] : position[last] + 1])


def chunks_of_tags(tags: dict[str, str], ordered: Sequence[str], position: dict[str, int] | None = None) -> list[str]:
    """Chunks a run (or request) with ``tags`` covers: its range, or its single partition."""
    if tags.get(RANGE_START):
        return expand(tags.get(RANGE_START), tags.get(RANGE_END), ordered, position)
    single = tags.get(PARTITION_TAG)
    return [single] if single and (position is None or single in position) else []


def ordered_chunks(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(CHUNKS))


@dataclass
class ChunkStage:
    """The latest materialisation of one stage for one chunk that counts for the job."""

    items: int
    decided: int
    matched: int
    passed_through: int
    errors: int
    order: tuple[float, int]
    skipped: int = 0
    """Items an unconfigured stage only passed on (metadata ``skipped_items``): done, not decided."""


@dataclass
class JobFacts:
    """Everything the view is computed from; control and schedules plan from the same facts."""

    job_id: str
    project: str
    batch: str
    stages: list[str]
    chunks: list[str]
    runs: list[dg.RunRecord]
    requests: list[JobRequest] = field(default_factory=list)
    done: dict[str, dict[str, ChunkStage]] = field(default_factory=dict)
    """``{stage: {chunk: ChunkStage}}``"""
    control: str | None = None
    reason: str | None = None
    backfill_status: str | None = None
    """``REQUESTED``, ``COMPLETED``, ``FAILED``, ``CANCELED``... when the job is a backfill."""
    ordered: list[str] = field(default_factory=list)
    began: float | None = None
    """When the job began: its first run's or request's creation, or its backfill's request."""

    def run_stage(self, record: dg.RunRecord) -> str | None:
        return stage_of_run(record.dagster_run)

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

    def pending_requests(self) -> list[JobRequest]:
        return [r for r in self.requests if r.state == "pending"]

    def range_of(self, record: dg.RunRecord) -> list[str]:
        return chunks_of_tags(dict(record.dagster_run.tags), self.ordered or self.chunks)

    def busy(self, stage: str | None = None) -> set[str]:
        """Chunks an active run or a pending request (of ``stage``, or of any stage) covers."""
        covered: set[str] = set()
        for record in self.active_runs():
            if stage is None or self.run_stage(record) == stage:
                covered.update(self.range_of(record))
        for request in self.pending_requests():
            if stage is None or request.stage == stage:
                covered.update(chunks_of_tags(request.tags, self.ordered or self.chunks))
        return covered


_cache_lock = threading.Lock()
_finished_run_events: dict[str, list[tuple[tuple[float, int], str, str, dict[str, Any]]]] = {}
"""Materialisations of finished runs never change: keep them per process (the API polls)."""


def _metadata(materialization: dg.AssetMaterialization) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


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
        # Ordered by time: SQLite storage numbers events per run, so storage ids do not compare across runs.
        order = (event_record.event_log_entry.timestamp, event_record.storage_id)
        events.append((order, materialization.asset_key.to_user_string(), materialization.partition, _metadata(materialization)))
    if run.is_finished:
        with _cache_lock:
            if len(_finished_run_events) > 5000:
                _finished_run_events.clear()
            _finished_run_events[key] = events
    return events


def job_runs(instance: dg.DagsterInstance, job_id: str) -> list[dg.RunRecord]:
    """The job's runs: tagged with its id as backfill or job, or the stage run with that id."""
    found: dict[str, dg.RunRecord] = {}
    for filters in (dg.RunsFilter(tags={TAG_JOB: job_id}), dg.RunsFilter(tags={BACKFILL_TAG: job_id}), dg.RunsFilter(run_ids=[job_id])):
        for record in instance.get_run_records(filters):
            if filters.run_ids and job_id_of_run(record.dagster_run) != job_id:
                continue  # a run id that is not a job of its own
            found[record.dagster_run.run_id] = record
    return sorted(found.values(), key=lambda r: r.create_timestamp)


def _backfill(instance: dg.DagsterInstance, backfill_id: str) -> tuple[str | None, list[str], set[str], float | None]:
    """``(status, stages selected, target chunks, requested at)`` of a backfill; empty when it is not one."""
    backfill = instance.get_backfill(backfill_id)
    if backfill is None:
        return None, [], set(), None
    selected = {key.to_user_string() for key in (backfill.asset_selection or ())}
    stages = [s for s in STAGES if STAGE_SPECS[s].asset_name in selected]
    targets: set[str] = set()
    try:  # an asset backfill knows its target partitions before it has launched a run for them
        data = backfill.asset_backfill_data
        for asset_partition in data.target_subset.iterate_asset_partitions() if data else ():
            if asset_partition.asset_key.to_user_string() in _ASSET_STAGE and asset_partition.partition_key:
                targets.add(asset_partition.partition_key)
    except (AttributeError, TypeError, ValueError):  # an older serialisation: the runs' ranges still tell
        targets = set()
    return backfill.status.value, stages, targets, backfill.backfill_timestamp


def load_job(instance: dg.DagsterInstance, job_id: str, *, partition_keys: Sequence[str] | None = None) -> JobFacts | None:
    """The facts of job ``job_id``, or None when no run or request carries that id."""
    # The requests are read before the runs, and a request is set aside only for a run in this
    # same list: the daemon may launch a request's run and forget the request between two reads,
    # and read the other way round a job just launched had neither (None: "no such job").
    requests = list_requests(instance, job_id)
    runs = job_runs(instance, job_id)
    listed = {r.dagster_run.run_id for r in runs}
    pending = [r for r in requests if r.state == "pending"]
    launched = {rid for rid, run in launched_runs(instance, pending).items() if run.run_id in listed}
    requests = [r for r in requests if r.id not in launched]  # their run is the record now
    maybe_backfill = not requests and (not runs or any(r.dagster_run.tags.get(BACKFILL_TAG) == job_id for r in runs))
    backfill_status, backfill_stages, targets, backfill_began = _backfill(instance, job_id) if maybe_backfill else (None, [], set(), None)
    if not runs and not requests and backfill_status is None:
        return None
    ordered = list(partition_keys) if partition_keys is not None else ordered_chunks(instance)
    position = {key: i for i, key in enumerate(ordered)}
    chunks: set[str] = set()
    wanted: set[str] = set()
    control = reason = None
    tagged_plan = False
    for tags in [dict(r.dagster_run.tags) for r in runs] + [r.tags for r in requests]:
        chunks.update(chunks_of_tags(tags, ordered, position))
        for tag in (TAG_STAGES, TAG_PLAN):
            named = [s for s in tags.get(tag, "").split(",") if s in STAGES]
            tagged_plan = tagged_plan or bool(named)
            wanted.update(named)
        value = tags.get(TAG_CONTROL)
        if value in _CONTROL_PRIORITY and _CONTROL_PRIORITY[value] > _CONTROL_PRIORITY.get(control or "", -1):
            control, reason = value, tags.get(TAG_REASON)
    for request in requests:
        wanted.add(request.stage)
        state = request.state if request.state in ("paused", "canceled", "failed") else None
        if state and _CONTROL_PRIORITY[state] > _CONTROL_PRIORITY.get(control or "", -1):
            control, reason = state, request.reason
    run_stages = {s for s in (stage_of_run(r.dagster_run) for r in runs) if s}
    wanted |= run_stages
    chunks.update(t for t in targets if t in position)
    wanted.update(backfill_stages)
    if wanted and not tagged_plan:
        # Started in the UI: the cascade carries the chunks on from the first stage it ran to the last.
        wanted.update(STAGES[min(STAGES.index(s) for s in wanted) :])
    first = runs[0].dagster_run.tags if runs else requests[0].tags if requests else {}
    project, batch = first.get(TAG_PROJECT, ""), first.get(TAG_BATCH, "")
    ordered_chunks_ = sorted(chunks, key=lambda c: (position.get(c, len(position)), c))  # retired ones last
    if not project and ordered_chunks_:
        number, project, _ = parse_chunk_key(ordered_chunks_[0])
        batch = f"b{number:06d}"
    facts = JobFacts(
        job_id=job_id,
        project=project,
        batch=batch,
        stages=[s for s in STAGES if s in wanted],
        chunks=ordered_chunks_,
        runs=runs,
        requests=requests,
        control=control,
        reason=reason,
        backfill_status=backfill_status,
        ordered=ordered,
        began=backfill_began,
    )
    _load_done(instance, facts)
    return facts


def _load_done(instance: dg.DagsterInstance, facts: JobFacts) -> None:
    job_chunks = set(facts.chunks)

    def record(stage: str, partition: str, order: tuple[float, int], metadata: dict[str, Any]) -> None:
        previous = facts.done.setdefault(stage, {}).get(partition)
        if previous and previous.order > order:
            return
        facts.done[stage][partition] = ChunkStage(
            items=int(metadata.get("items", CHUNK_SIZE) or 0),
            decided=int(metadata.get("decided", 0) or 0),
            matched=int(metadata.get("matched", 0) or 0),
            passed_through=int(metadata.get("passed_through", 0) or 0),
            errors=int(metadata.get("errors", 0) or 0),
            order=order,
            skipped=int(metadata.get("skipped_items", 0) or 0),
        )

    for run_record in facts.runs:
        for order, asset, partition, metadata in _materializations(instance, run_record):
            stage = _ASSET_STAGE.get(asset)
            if stage is not None and partition in job_chunks:
                record(stage, partition, order, metadata)
    # Chunks another run finished after this job began (a re-run under another id) are done too.
    stamps = [r.create_timestamp.timestamp() for r in facts.runs] + [r.created for r in facts.requests]
    facts.began = min(stamps + ([facts.began] if facts.began else []))
    began = facts.began
    for stage in facts.stages:
        missing = facts.unfinished(stage)
        for start in range(0, len(missing), 500):
            keys = missing[start : start + 500]
            result = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(STAGE_SPECS[stage].asset_name), asset_partitions=keys, after_timestamp=began),
                limit=len(keys) * 4,
            )
            for event in result.records:
                materialization = event.asset_materialization
                if materialization is not None and materialization.partition in job_chunks:
                    record(stage, materialization.partition, (event.timestamp, event.storage_id), _metadata(materialization))


def list_job_ids(instance: dg.DagsterInstance, project: str | None = None) -> list[str]:
    """Job ids known to the instance (optionally of one project), oldest first: tagged runs,
    backfills and UI-launched stage runs, and jobs that so far are only requests."""
    first_seen: dict[str, float] = {}

    def seen(job: str | None, stamp: float) -> None:
        if job:
            first_seen[job] = min(first_seen.get(job, stamp), stamp)

    stage_jobs = [spec.job_name for spec in STAGE_SPECS.values()]
    # Every run: those the UI launched carry no job or project tag, only their chunk keys tell.
    records = instance.get_run_records()
    for record in records:
        run = record.dagster_run
        if run.job_name not in stage_jobs and stage_of_run(run) is None:
            continue
        if project and _project_of(run) != project:
            continue
        seen(job_id_of_run(run), record.create_timestamp.timestamp())
    for request in list_requests(instance):
        if not project or request.tags.get(TAG_PROJECT) == project:
            seen(request.job, request.created)
    if not project:  # a backfill of a stage asset that has launched no run yet is a job too
        for backfill in instance.get_backfills(limit=200):
            if any(key.to_user_string() in _ASSET_STAGE for key in (backfill.asset_selection or ())):
                seen(backfill.backfill_id, backfill.backfill_timestamp)
    return sorted(first_seen, key=first_seen.__getitem__)


def _project_of(run: dg.DagsterRun) -> str | None:
    if run.tags.get(TAG_PROJECT):
        return run.tags[TAG_PROJECT]
    key = run.tags.get(RANGE_START) or run.tags.get(PARTITION_TAG)
    try:
        return parse_chunk_key(key)[1] if key else None
    except ValueError:
        return None


# -- planning from the facts ---------------------------------------------------------------------


def stages_through(stages: Sequence[str], stage: str) -> list[str]:
    return list(stages[: list(stages).index(stage) + 1])


def _previous(stages: Sequence[str], stage: str) -> str | None:
    position = list(stages).index(stage)
    return stages[position - 1] if position else None


def unfinished_work(facts: JobFacts) -> dict[str, list[str]]:
    """Per stage, chunks not done whose previous job stage is done (the next step of each chunk),
    leaving out chunks an active run or a pending request already covers."""
    busy = facts.busy()
    work: dict[str, list[str]] = {}
    for stage in facts.stages:
        before = _previous(facts.stages, stage)
        ready = facts.done.get(before, {}) if before else None
        todo = [c for c in facts.unfinished(stage) if c not in busy and (ready is None or c in ready)]
        if todo:
            work[stage] = todo
    return work


def failed_work(facts: JobFacts) -> dict[str, list[str]]:
    """Per stage, chunks whose *earliest* failed stage it is: item errors, or not done at all."""
    busy = facts.busy()
    work: dict[str, list[str]] = {}
    assigned: set[str] = set()
    for stage in facts.stages:
        errors = set(facts.with_item_errors(stage))
        before = _previous(facts.stages, stage)
        ready = facts.done.get(before, {}) if before else None
        missing = {c for c in facts.unfinished(stage) if ready is None or c in ready}
        todo = [c for c in facts.chunks if c in (errors | missing) and c not in assigned and c not in busy]
        if todo:
            work[stage] = todo
            assigned.update(todo)
    return work


def retry_pending(record: dg.RunRecord, now: float | None = None) -> bool:
    """A failed run the daemon said it will retry, recently enough that the retry may still come."""
    run = record.dagster_run
    if run.tags.get(WILL_RETRY) != "true":
        return False
    ended = record.end_time or record.update_timestamp.timestamp()
    return (now or time.time()) - ended < RETRY_GRACE_SECONDS


__all__ = [
    "ACTIVE",
    "JOB_TYPES",
    "STARTED",
    "ChunkStage",
    "JobFacts",
    "failed_work",
    "job_id_of_run",
    "load_job",
    "stage_of_run",
    "stages_through",
    "unfinished_work",
]
