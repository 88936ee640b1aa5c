"""Control of a job: create, cancel, pause, resume, retry failed, process the next chunks.

Every action works on the Dagster instance only: it creates, cancels or re-tags the job's runs.
The control state is a run tag (``matching/control``) so the status view and the Dagster UI read
the same record.

Two ways to launch work:

- ``submit`` (the API's and ``--submit``'s way): the runs are *requested*: each planned run is
  recorded as a job request in the Dagster instance (``defs/requests.py``) and
  ``job_requests_sensor``, running under the daemon, turns it into a ``RunRequest``; the daemon
  launches it under the ``concurrency:`` limits of ``dagster.yaml``, exactly like runs launched
  from the UI or by any sensor. Only public Dagster APIs are involved, and no webserver is needed.
- ``in_process`` (the CLI's default and ``POST /api/jobs/{id}/process``): runs execute now, in
  this process, against the same instance (``execute_in_process``), as the CLI's ``match`` does.
  Their ``matching/stages`` tag stops at their own stage so that a running cascade sensor never
  launches a duplicate of what this process does next; ``matching/plan`` keeps the job's stages.

Pause holds the job: queued runs are canceled (tagged ``paused``, so the view does not call the
job canceled), runs already executing finish the chunks they cover, but their ``matching/stages``
tag is narrowed so the cascade sensor starts nothing after them and the daemon does not retry
them. Resume plans only chunks that are not done, per stage, and re-opens in-flight runs.

Retry-failed runs carry ``matching/redecide=failed`` (honoured by ``defs/stages.py``): within a
chunk, only items whose decision for that stage has an error (or is missing) are decided again,
every other decision is kept. The next stages follow on the same chunks with the same tag (the
``cascade_sensor`` in ``defs/sensors.py``, or this module when in-process), so a later stage
drops decisions of items an earlier stage has now matched and decides only what is new.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.job_facts import (
    ACTIVE,
    JOB_TYPES,
    STARTED,
    JobFacts,
    failed_work,
    load_job,
    ordered_chunks,
    stage_of_run,
    stages_through,
    unfinished_work,
)
from matching_pipeline.defs.notifications import notify_job_if_finished
from matching_pipeline.defs.partitions import ensure_chunk_keys
from matching_pipeline.defs.requests import add_request, launched_runs, set_state
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.defs.tags import (
    MAX_RETRIES,
    RANGE_END,
    RANGE_START,
    TAG_CONTROL,
    TAG_PLAN,
    TAG_REASON,
    TAG_REDECIDE,
    TAG_STAGES,
    TAG_SUPERSEDED,
    WILL_RETRY,
)
from matching_pipeline.jobs.pools import (
    end_dead_run,
    process_gone,
    reap_dead_runs,
    terminate_local_run,
)
from matching_pipeline.jobs.runner import (
    _first_error,
    ensure_partitions,
    execute_stage_run,
)
from matching_pipeline.jobs.status import job_status
from matching_pipeline.results.store import Batch


class ControlError(Exception):
    """An action that does not apply to the job in its current state (HTTP 409)."""


class UnknownJob(ControlError):
    """No run carries this job id (HTTP 404)."""


# -- launching ---------------------------------------------------------------------------------


class Submitter:
    """Hands runs to the daemon: records one job request per run (``defs/requests.py``), which
    ``job_requests_sensor`` turns into a ``RunRequest``. Returns the request id."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance

    def submit(self, stage: str, tags: dict[str, str]) -> str:
        return add_request(self.instance, stage, tags).id


@dataclass
class Launched:
    runs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _execute(
    defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, tags: dict[str, str], out: Launched, owner: str = "cli"
) -> bool:
    result = execute_stage_run(defs, instance, stage, tags, owner=owner)
    out.runs.append(result.run_id)
    if not result.success:
        out.failed.append(result.run_id)
        out.errors.append(_first_error(result))
    return result.success


def _tags(facts: JobFacts, stage: str, first: str, last: str, *, narrow: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    stages = stages_through(facts.stages, stage) if narrow else facts.stages
    tags = run_tags(first, last, job_id=facts.job_id, stages=stages)
    tags[TAG_PLAN] = ",".join(facts.stages)
    tags.update(extra or {})
    return tags


def _ordered(instance: dg.DagsterInstance, needed: Sequence[str] = ()) -> list[str]:
    """The partition set's keys in order, after adding back any of ``needed`` that retention
    retired (``defs/retention.py``): a run over a missing key could not start."""
    return ensure_chunk_keys(instance, needed, ordered_chunks(instance))


def _require(instance: dg.DagsterInstance, job_id: str, *, reap: bool = False) -> JobFacts:
    """The job's facts; with ``reap``, after failing its runs whose process is gone (``pools.py``),
    which would otherwise count as in progress for ever and keep their chunks from resume/retry."""
    facts = load_job(instance, job_id)
    if facts is None:
        raise UnknownJob(f"job {job_id!r} not found")
    if reap:
        live = [r.dagster_run.run_id for r in facts.runs if r.dagster_run.status in (*STARTED, dg.DagsterRunStatus.NOT_STARTED)]
        if reap_dead_runs(instance, live):
            return _require(instance, job_id)
    return facts


# -- actions -----------------------------------------------------------------------------------


def create_job(
    instance: dg.DagsterInstance,
    batch: Batch,
    job_type: str,
    *,
    submitter: Submitter | None = None,
    job_id: str | None = None,
) -> str:
    """Launch ``batch`` through the stages of ``job_type``: its first stage's runs go to the queue."""
    if job_type not in JOB_TYPES:
        raise ValueError(f"jobType must be one of {', '.join(JOB_TYPES)}")
    stages = list(JOB_TYPES[job_type])
    job_id = job_id or f"{batch.label}-api-{uuid.uuid4().hex[:8]}"
    ensure_partitions(instance, batch.chunk_keys)
    submitter = submitter or Submitter(instance)
    spec = STAGE_SPECS[stages[0]]
    for first, last in plan_runs(batch.chunk_keys, spec.chunks_per_run, _ordered(instance)):
        tags = run_tags(first, last, job_id=job_id, stages=stages)
        tags[TAG_PLAN] = ",".join(stages)
        submitter.submit(stages[0], tags)
    return job_id


def cancel_job(instance: dg.DagsterInstance, job_id: str, *, status: str = "canceled", reason: str | None = None) -> JobFacts:
    """Stop the job for good: queued runs are canceled, running ones terminated where possible.

    ``status`` is ``canceled`` or ``failed`` (the old API's PATCH). Finished chunks stay finished.
    """
    if status not in ("canceled", "failed"):
        raise ValueError("status must be canceled or failed")
    facts = _require(instance, job_id)
    for record in facts.runs:
        run = record.dagster_run
        tags = {TAG_CONTROL: status, TAG_REASON: reason or f"{status} by request"}
        if run.status in ACTIVE:
            tags.update(_hold_tags(facts, run))
        elif run.status == dg.DagsterRunStatus.FAILURE:
            tags[WILL_RETRY] = "false"
        instance.add_run_tags(run.run_id, tags)
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            _cancel_queued(instance, run.run_id)
        elif run.status in STARTED:
            _stop_running(instance, run, tags[TAG_REASON])
    for request in facts.requests:
        if request.state in ("pending", "paused"):
            set_state(instance, request, status, reason or f"{status} by request")
    return _require(instance, job_id)


def _stop_running(instance: dg.DagsterInstance, run: dg.DagsterRun, reason: str) -> None:
    """End the process executing ``run``, not only its record, then record the run canceled.

    A run the CLI executes in process on this host is stopped by signalling that process (its
    pid is in the run's tags): the step runs there. A run the daemon launched is terminated by
    the run launcher, which stops its run worker. A run the API server executes in process is
    not killed with the server: its stage sees the canceled tag and stops at its next block.
    """
    stopped = terminate_local_run(run)
    if stopped is None:
        try:
            if instance.run_launcher.terminate(run.run_id):
                return
        except Exception:  # no launcher record (run executed in process): decided below
            pass
        if not process_gone(dict(run.tags)):
            return
    current = instance.get_run_by_id(run.run_id)
    if current is not None:
        end_dead_run(instance, current, f"{reason}; its process was stopped", canceled=True)


def pause_job(instance: dg.DagsterInstance, job_id: str) -> JobFacts:
    """No new chunks start; runs already executing finish their chunks and start nothing after."""
    facts = _require(instance, job_id)
    if facts.control in ("canceled", "failed"):
        raise ControlError(f"job {job_id} is {facts.control}; nothing to pause")
    for record in facts.runs:
        run = record.dagster_run
        tags = {TAG_CONTROL: "paused"}
        if run.status in ACTIVE:
            tags.update(_hold_tags(facts, run))
        elif run.status == dg.DagsterRunStatus.FAILURE and run.tags.get(WILL_RETRY) == "true":
            tags[WILL_RETRY] = "false"
        instance.add_run_tags(run.run_id, tags)
        if run.status in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
            _cancel_queued(instance, run.run_id)
    for request in facts.pending_requests():
        set_state(instance, request, "paused")
    return _require(instance, job_id)


def resume_job(
    instance: dg.DagsterInstance,
    job_id: str,
    *,
    defs: dg.Definitions | None = None,
    submitter: Submitter | None = None,
) -> Launched:
    """Run only what is not done: per stage, the chunks whose previous stage is done.

    With ``defs`` the work executes in this process, stage after stage; otherwise it is submitted
    to the run queue and the cascade sensor carries each range through the later stages.
    """
    facts = _require(instance, job_id, reap=True)
    if facts.control == "canceled":
        raise ControlError(f"job {job_id} was canceled; create a new job instead")
    for record in facts.runs:
        run = record.dagster_run
        tags = {TAG_CONTROL: "resumed"}
        if run.status in ACTIVE and run.tags.get(TAG_PLAN) and run.tags.get(TAG_STAGES) != run.tags[TAG_PLAN]:
            tags[TAG_STAGES] = run.tags[TAG_PLAN]  # in-flight runs cascade again
        instance.add_run_tags(run.run_id, tags)
    _reopen_requests(instance, facts)
    facts = _require(instance, job_id)
    out = Launched()
    ordered = _ordered(instance, facts.chunks if unfinished_work(facts) else ())
    if defs is not None:
        for stage in facts.stages:
            todo = unfinished_work(facts).get(stage, [])
            for first, last in plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, ordered):
                if not _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True), out):
                    return out
            facts = _require(instance, job_id)
            if facts.control in ("paused", "canceled", "failed"):
                return out  # paused (or stopped) meanwhile: start nothing new
        return out
    submitter = submitter or Submitter(instance)
    for stage, todo in unfinished_work(facts).items():
        for first, last in plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, ordered):
            out.runs.append(submitter.submit(stage, _tags(facts, stage, first, last, narrow=False)))
    return out


def retry_failed(
    instance: dg.DagsterInstance,
    job_id: str,
    *,
    defs: dg.Definitions | None = None,
    submitter: Submitter | None = None,
) -> Launched:
    """Retry only failed chunks and, within them, only failed items; later stages follow."""
    facts = _require(instance, job_id, reap=True)
    if facts.control == "canceled":
        raise ControlError(f"job {job_id} was canceled; create a new job instead")
    if facts.active_runs() or facts.pending_requests():
        raise ControlError(f"job {job_id} has runs in progress or requested; pause or wait before retrying")
    for record in facts.runs:
        instance.add_run_tags(record.dagster_run.run_id, {TAG_CONTROL: "resumed"})
    _reopen_requests(instance, facts)
    facts = _require(instance, job_id)
    work = failed_work(facts)
    ordered = _ordered(instance, [c for todo in work.values() for c in todo])
    extra = {TAG_REDECIDE: "failed"}
    out = Launched()
    if defs is not None:
        carried: list[str] = []
        for stage in facts.stages:
            todo = [c for c in facts.chunks if c in set(carried) | set(work.get(stage, []))]
            for first, last in plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, ordered):
                if not _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True, extra=extra), out):
                    return out
            carried = todo
            if _require(instance, job_id).control in ("paused", "canceled", "failed"):
                return out
        return out
    submitter = submitter or Submitter(instance)
    for stage, todo in work.items():
        for first, last in plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, ordered):
            out.runs.append(submitter.submit(stage, _tags(facts, stage, first, last, narrow=True, extra=extra)))
    return out


def _reopen_requests(instance: dg.DagsterInstance, facts: JobFacts) -> None:
    """Paused requests are replanned from the facts by resume: keep them as a record, no longer
    as the job's control state (which the runs' ``resumed`` tag now is)."""
    for request in facts.requests:
        if request.state == "paused":
            set_state(instance, request, "superseded", "resumed: planned again")


def process_next(
    instance: dg.DagsterInstance, job_id: str, defs: dg.Definitions, *, owner: str = "api"
) -> tuple[Launched, str]:
    """Materialise the job's next chunks now, in this process (one run's worth), and say what ran.

    ``owner`` is recorded on the run (``tags.TAG_OWNER``): the API server's runs are never
    stopped by killing their process.

    A queued run of the job is claimed (canceled, tagged superseded) and its range executed here;
    otherwise the next unfinished range of the earliest stage with work is executed.
    """
    facts = _require(instance, job_id, reap=True)
    if facts.control in ("canceled", "failed"):
        raise ControlError(f"job {job_id} is {facts.control}")
    out = Launched()
    launched = launched_runs(instance, facts.pending_requests())
    for request in facts.pending_requests():
        if request.id in launched:
            continue  # the daemon launched it already: that run is claimed below if still queued
        set_state(instance, request, "superseded", "executed by /process")
        first, last = request.tags[RANGE_START], request.tags[RANGE_END]
        taken = {k: v for k, v in request.run_tags().items() if k not in request.tags or k == TAG_REDECIDE}
        _execute(defs, instance, request.stage, _tags(facts, request.stage, first, last, narrow=True, extra=taken), out, owner)
        return out, _message(request.stage, first, last, out)
    for record in facts.runs:
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.QUEUED and not run.tags.get(TAG_SUPERSEDED):
            stage = stage_of_run(run)
            if stage is None or not _cancel_queued(instance, run.run_id):
                continue
            instance.add_run_tags(run.run_id, {TAG_SUPERSEDED: "process"})
            first, last = run.tags[RANGE_START], run.tags[RANGE_END]
            extra: dict[str, str] | None = {TAG_REDECIDE: run.tags[TAG_REDECIDE]} if run.tags.get(TAG_REDECIDE) else None
            _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True, extra=extra), out, owner)
            return out, _message(stage, first, last, out)
    if facts.control == "paused":
        raise ControlError(f"job {job_id} is paused; resume it first")
    work = unfinished_work(facts)
    if not work:
        busy = bool(facts.active_runs() or facts.pending_requests())
        return out, "runs in progress cover the remaining chunks" if busy else "nothing left to process"
    stage, todo = next(iter(work.items()))
    first, last = plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, _ordered(instance, todo))[0]
    _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True), out, owner)
    return out, _message(stage, first, last, out)


def _message(stage: str, first: str, last: str, out: Launched) -> str:
    outcome = f"failed: {out.errors[-1]}" if out.failed else "done"
    return f"{stage}: chunks {first} .. {last} {outcome}"


def _hold_tags(facts: JobFacts, run: dg.DagsterRun) -> dict[str, str]:
    """Tags that keep a run from starting anything after it: no cascade, no automatic retry."""
    stage = stage_of_run(run)
    plan = run.tags.get(TAG_PLAN) or run.tags.get(TAG_STAGES) or ",".join(facts.stages)
    tags = {TAG_PLAN: plan, MAX_RETRIES: "0"}
    if stage:
        tags[TAG_STAGES] = ",".join(stages_through([s for s in STAGES if s in plan.split(",") or s == stage], stage))
    return tags


def _cancel_queued(instance: dg.DagsterInstance, run_id: str) -> bool:
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED):
        return False
    if run.status == dg.DagsterRunStatus.NOT_STARTED:
        instance.report_run_canceled(run)
        return True
    return bool(instance.run_coordinator.cancel_run(run_id))


def find_batch(db: Any, project: str, batch_id: int | None = None) -> Batch | None:
    batches = db.list_batches(project)
    if batch_id is not None:
        return next((b for b in batches if b.id == batch_id), None)
    return batches[-1] if batches else None


__all__ = [
    "ControlError",
    "Launched",
    "Submitter",
    "UnknownJob",
    "cancel_job",
    "create_job",
    "failed_work",
    "pause_job",
    "process_next",
    "resume_job",
    "retry_failed",
    "unfinished_work",
]


def cli_control(args: Any, instance: dg.DagsterInstance, build_defs: Callable[[], dg.Definitions]) -> int:
    """``matching-pipeline cancel|pause|resume|retry JOB``: print the job's view afterwards.

    ``build_defs`` comes from the entry point (the one wiring point, ``definitions.py``): it is
    called only when resume or retry execute in this process.
    """
    defs = build_defs() if args.command in ("resume", "retry") and not args.submit else None
    launched = Launched()
    try:
        if args.command == "cancel":
            cancel_job(instance, args.job, status="failed" if args.failed else "canceled", reason=args.reason)
            message = "canceled: queued runs canceled, running runs terminated"
        elif args.command == "pause":
            pause_job(instance, args.job)
            message = "paused: no new chunks start; runs in flight finish their chunks"
        elif args.command == "resume":
            launched = resume_job(instance, args.job, defs=defs)
            message = f"resumed: {len(launched.runs)} run(s) {'requested' if args.submit else 'executed'}"
        else:
            launched = retry_failed(instance, args.job, defs=defs)
            message = f"retrying failed chunks and items: {len(launched.runs)} run(s) {'requested' if args.submit else 'executed'}"
    except ControlError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if defs is not None:
        notify_job_if_finished(instance, args.job)
    view = job_status(instance, args.job) or {}
    summary = f"{args.job}: {message}; status {view.get('status')}, {view.get('progressPercentage')}%"
    print(json.dumps({"message": message, "job": view}, indent=2) if args.json else summary)
    return 1 if defs is not None and launched.failed else 0
