"""The cascade: when any run of a stage succeeds, the next stage follows on the same chunks.

Any run: a run of the stage's job (inbox sensor, API, schedules, resume), a partition or range
the UI materialised (``__ASSET_JOB``), or a run of a UI backfill. The range comes from the run's
``dagster/asset_partition_range_start/_end`` tags or its ``dagster/partition`` tag; the follow-up
runs carry the run's job id (``job_facts.job_id_of_run``) in ``matching/job``, so work started in
the UI is one job with its follow-ups.

It starts nothing:

- when the next stage's asset is part of the same backfill: the backfill daemon runs it;
- for a job paused, canceled or failed (``matching/control``), or a run whose ``matching/stages``
  ends at its own stage (runs executed in process, whose caller goes on itself, and held runs);
- for chunks the next stage is *up to date* on in the results database (it finished them after
  this stage last did: ``results/chunk_state.py``), whoever ran it: ``/process``, the CLI,
  another tick;
- for chunks an active run, or a pending request, of the next stage already covers.

Each request's ``run_key`` names the stage, the range and the time this stage last finished it, so
two evaluations over the same upstream decisions (two runs over the same chunks, a re-evaluated
tick) ask for one run only: Dagster de-duplicates run keys per sensor.

No ``from __future__ import annotations`` here: this module defines a sensor.
"""

from collections.abc import Sequence

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.intervals import EVERY_DAEMON_LOOP
from matching_pipeline.defs.job_facts import ACTIVE, chunks_of_tags, job_id_of_run, ordered_chunks, stage_of_run
from matching_pipeline.defs.jobs import stage_jobs
from matching_pipeline.defs.partitions import ensure_chunk_keys
from matching_pipeline.defs.requests import list_requests
from matching_pipeline.defs.resources import ResultsDatabaseResource
from matching_pipeline.defs.stages import STAGE_SPECS, pending_counts, plan_ranges_by_work, plan_runs, run_tags
from matching_pipeline.defs.tags import (
    BACKFILL_TAG,
    TAG_CONTROL,
    TAG_PLAN,
    TAG_REDECIDE,
    TAG_STAGES,
    TAG_TRIGGER,
)
from matching_pipeline.results.chunk_state import finished_at, owed_chunks
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase

CARRIED_TAGS = (TAG_PLAN, TAG_REDECIDE, TAG_TRIGGER)
"""Beyond the range and the job: what a stage's run hands to the next stage's run."""


def planned_stages(run: dg.DagsterRun, stage: str) -> list[str]:
    """The stages the run's job goes through: its tags, or (a run started in the UI) every stage
    from the run's own to the last."""
    tags = run.tags
    named = [s for s in tags.get(TAG_PLAN if TAG_REDECIDE in tags else TAG_STAGES, "").split(",") if s in STAGES]
    return named or list(STAGES[STAGES.index(stage) :])


def in_flight(instance: dg.DagsterInstance, stage: str, ordered: Sequence[str]) -> set[str]:
    """Chunks that an active run, or a pending job request, of ``stage`` covers."""
    position = {key: i for i, key in enumerate(ordered)}
    covered: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(statuses=list(ACTIVE))):
        if stage_of_run(run) == stage:
            covered.update(chunks_of_tags(dict(run.tags), ordered, position))
    for request in list_requests(instance):
        if request.state == "pending" and request.stage == stage:
            covered.update(chunks_of_tags(request.tags, ordered, position))
    return covered


def cascade_requests(instance: dg.DagsterInstance, run: dg.DagsterRun, db: ResultsDatabase) -> list[dg.RunRequest] | str:
    """The next stage's run requests after ``run`` succeeded, or why there are none."""
    stage = stage_of_run(run)
    if stage is None:
        return f"run {run.run_id} materialises no stage"
    if run.tags.get(TAG_CONTROL) in ("paused", "canceled", "failed"):
        return f"job is {run.tags[TAG_CONTROL]}"
    wanted = planned_stages(run, stage)
    following = [s for s in wanted if stage in wanted and wanted.index(s) > wanted.index(stage)]
    if not following:
        return f"run {run.run_id} asks for no stage after {stage}"
    nxt = following[0]
    spec = STAGE_SPECS[nxt]
    backfill_id = run.tags.get(BACKFILL_TAG)
    if backfill_id:
        backfill = instance.get_backfill(backfill_id)
        if backfill is not None and dg.AssetKey(spec.asset_name) in set(backfill.asset_selection or ()):
            return f"{spec.asset_name} is part of backfill {backfill_id}: the backfill daemon runs it"
    ordered = ordered_chunks(instance)
    chunks = chunks_of_tags(dict(run.tags), ordered)
    if not chunks:
        return f"run {run.run_id} names no chunks that exist"
    ordered = ensure_chunk_keys(instance, chunks, ordered)  # retired since the run (defs/retention.py)
    owed = owed_chunks(db, nxt, stage, chunks)
    busy = in_flight(instance, nxt, ordered)
    todo = [c for c in owed if c not in busy]
    if not todo:
        return f"{nxt} is done or in progress for every chunk of run {run.run_id}"
    job_id = job_id_of_run(run) or run.run_id
    carried = {k: v for k, v in run.tags.items() if k in CARRIED_TAGS}
    stages = wanted[: wanted.index(nxt) + 1] if TAG_REDECIDE in run.tags else wanted
    upstream = finished_at(db, stage, todo)
    requests = []
    for first, last in _plan_by_work(db, nxt, todo, ordered):
        covered = ordered[ordered.index(first) : ordered.index(last) + 1]
        stamp = max((upstream[c] for c in covered if c in upstream), default=None)
        tags = {**carried, **run_tags(first, last, job_id=job_id, stages=stages)}
        if TAG_REDECIDE in run.tags and TAG_PLAN not in tags:
            tags[TAG_PLAN] = ",".join(wanted)
        key = f"{nxt}:{first}:{last}:{stamp.isoformat() if stamp else run.run_id}"
        requests.append(dg.RunRequest(job_name=spec.job_name, run_key=key, tags=tags))
    return requests


def _plan_by_work(db: ResultsDatabase, stage: str, todo: Sequence[str], ordered: Sequence[str]) -> list[tuple[str, str]]:
    """Runs sized by the items ``stage`` has left, not by chunk count (issue: 250 items over 2,174
    chunks took 44 runs). Gaps in ``todo`` still split ranges, so no run redoes a finished chunk."""
    spec = STAGE_SPECS[stage]
    ranges: list[tuple[str, str]] = []
    position = {key: i for i, key in enumerate(ordered)}
    for first, last in plan_runs(todo, len(ordered) or 1, ordered):
        segment = list(ordered[position[first] : position[last] + 1])
        ranges += plan_ranges_by_work(
            segment,
            pending_counts(db, stage, segment),
            spec.chunks_per_run * CHUNK_SIZE,
            max_chunks_per_run=MAX_CHUNKS_PER_RUN,
        )
    return ranges


MAX_CHUNKS_PER_RUN = 2_500
"""Bounds one run's bookkeeping (a planned and a stored event per chunk) when little is pending."""


@dg.run_status_sensor(
    name="cascade_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_jobs=[stage_jobs[stage] for stage in STAGES[1:]],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=EVERY_DAEMON_LOOP,
    description="When any run of a stage succeeds (UI-launched too), starts the next stage on the chunks it still owes.",
)
def cascade_sensor(context: dg.RunStatusSensorContext, results: ResultsDatabaseResource) -> list[dg.RunRequest] | None:
    """No ``monitored_jobs``: every run of this code location is looked at, so runs the UI
    launched over the asset graph are carried on too (a run of no stage is skipped).

    A run that needs nothing next is logged and answered with None, not a ``SkipReason``: a
    run-status sensor ends its tick at the first run it answers with anything but None, so a
    skip reason per run would carry on one finished run per daemon loop (5 s), and a batch of
    runs that need nothing (web-search runs, the catalog's, a finished stage's) would hold back
    the runs behind them that do.
    """
    outcome = cascade_requests(context.instance, context.dagster_run, results.get())
    if isinstance(outcome, str):
        context.log.info(f"run {context.dagster_run.run_id}: {outcome}")
        return None
    return outcome


__all__ = ["cascade_requests", "cascade_sensor", "planned_stages"]
