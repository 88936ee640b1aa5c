"""Control of a job: create, cancel, pause, resume, retry failed, process the next chunks.

Every action works on the Dagster instance only: it creates, cancels or re-tags the job's runs.
The control state is a run tag (``matching/control``) so the status view and the Dagster UI read
the same record.

Two ways to launch work:

- ``submit`` (the API's and ``--submit``'s way): runs are created from the job as the code
  location defines it and handed to ``instance.submit_run``, i.e. the instance's run queue; the
  daemon dequeues them under the ``concurrency:`` limits of ``dagster.yaml`` and launches them
  in the code location's gRPC server, exactly like runs launched from the UI or by a sensor.
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

import os
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.stages import (
    RANGE_END,
    RANGE_START,
    STAGE_SPECS,
    TAG_JOB,
    TAG_REDECIDE,
    TAG_STAGES,
    plan_runs,
    run_tags,
)
from matching_pipeline.jobs.pools import end_dead_run, process_gone, reap_dead_runs, terminate_local_run
from matching_pipeline.jobs.runner import _first_error, ensure_partitions, execute_stage_run
from matching_pipeline.jobs.status import (
    ACTIVE,
    JOB_TYPES,
    STARTED,
    TAG_CONTROL,
    TAG_PLAN,
    TAG_REASON,
    TAG_SUPERSEDED,
    WILL_RETRY,
    JobFacts,
    load_job,
    stage_of_job_name,
)
from matching_pipeline.results.store import Batch

MAX_RETRIES = "dagster/max_retries"
LOCATION_NAME = os.environ.get("MATCHING_CODE_LOCATION", "matching_pipeline")
DEFINITIONS_MODULE = "matching_pipeline.definitions"


class ControlError(Exception):
    """An action that does not apply to the job in its current state (HTTP 409)."""


class UnknownJob(ControlError):
    """No run carries this job id (HTTP 404)."""


# -- planning ----------------------------------------------------------------------------------


def _previous(stages: Sequence[str], stage: str) -> str | None:
    position = list(stages).index(stage)
    return stages[position - 1] if position else None


def _covered_by_active(facts: JobFacts) -> set[str]:
    covered: set[str] = set()
    for record in facts.active_runs():
        covered.update(facts.range_of(record))
    return covered


def unfinished_work(facts: JobFacts) -> dict[str, list[str]]:
    """Per stage, chunks not done whose previous job stage is done (the next step of each chunk)."""
    busy = _covered_by_active(facts)
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
    busy = _covered_by_active(facts)
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


def stages_through(stages: Sequence[str], stage: str) -> list[str]:
    return list(stages[: list(stages).index(stage) + 1])


# -- launching ---------------------------------------------------------------------------------


class Submitter:
    """Creates runs from the code location's jobs and submits them to the instance's run queue.

    The code location is loaded in this process (``InProcessCodeLocation`` over
    ``matching_pipeline.definitions``) under the workspace's location name, so the daemon finds
    it in its own workspace and launches the run there. This is what the webserver's
    ``launchRun`` mutation does, without needing a webserver.
    """

    _lock = threading.Lock()

    def __init__(self, instance: dg.DagsterInstance, location_name: str = LOCATION_NAME):
        self.instance = instance
        self.location_name = location_name
        self._location = None

    def _repository(self):
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.remote_representation.code_location import InProcessCodeLocation
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        with self._lock:
            if self._location is None:
                origin = InProcessCodeLocationOrigin(
                    LoadableTargetOrigin(
                        executable_path=sys.executable, module_name=DEFINITIONS_MODULE, working_directory=os.getcwd()
                    ),
                    location_name=self.location_name,
                )
                self._location = InProcessCodeLocation(origin, instance=self.instance)
            location = self._location
        (repository,) = location.get_repositories().values()
        return location, repository

    def submit(self, stage: str, tags: dict[str, str]) -> str:
        location, repository = self._repository()
        remote_job = repository.get_full_job(STAGE_SPECS[stage].job_name)
        plan = location.get_execution_plan(remote_job, {}, None, None, instance=self.instance)
        run = self.instance.create_run(
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            job_name=remote_job.name,
            run_id=None,
            asset_selection=None,
            asset_check_selection=None,
            op_selection=None,
            resolved_op_selection=None,
            run_config={},
            step_keys_to_execute=None,
            tags={**remote_job.tags, **tags},
            root_run_id=None,
            parent_run_id=None,
            status=dg.DagsterRunStatus.NOT_STARTED,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_graph=repository.asset_graph,
        )
        self.instance.submit_run(run.run_id, workspace=None)  # the queued coordinator only enqueues
        return run.run_id


@dataclass
class Launched:
    runs: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _execute(
    defs: dg.Definitions, instance: dg.DagsterInstance, stage: str, tags: dict[str, str], out: Launched, owner: str = "cli"
) -> bool:
    result = execute_stage_run(defs, instance, stage, tags, owner=owner, run_config={})
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


def _ordered(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(chunk_partitions.name))


def _require(instance: dg.DagsterInstance, job_id: str, *, reap: bool = False) -> JobFacts:
    """The job's facts; with ``reap``, after failing its runs whose process is gone (``pools.py``),
    which would otherwise count as in progress for ever and keep their chunks from resume/retry."""
    if reap:
        live = instance.get_runs(dg.RunsFilter(tags={TAG_JOB: job_id}, statuses=[*STARTED, dg.DagsterRunStatus.NOT_STARTED]))
        reap_dead_runs(instance, [run.run_id for run in live])
    facts = load_job(instance, job_id)
    if facts is None:
        raise UnknownJob(f"job {job_id!r} not found")
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
        if not process_gone(run.tags):
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
    facts = _require(instance, job_id)
    out = Launched()
    ordered = _ordered(instance)
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
    if facts.active_runs():
        raise ControlError(f"job {job_id} has runs in progress; pause or wait before retrying")
    for record in facts.runs:
        instance.add_run_tags(record.dagster_run.run_id, {TAG_CONTROL: "resumed"})
    facts = _require(instance, job_id)
    work = failed_work(facts)
    ordered = _ordered(instance)
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


def process_next(
    instance: dg.DagsterInstance, job_id: str, defs: dg.Definitions, *, owner: str = "api"
) -> tuple[Launched, str]:
    """Materialise the job's next chunks now, in this process (one run's worth), and say what ran.

    ``owner`` is recorded on the run (``pools.TAG_OWNER``): the API server's runs are never
    stopped by killing their process.

    A queued run of the job is claimed (canceled, tagged superseded) and its range executed here;
    otherwise the next unfinished range of the earliest stage with work is executed.
    """
    facts = _require(instance, job_id, reap=True)
    if facts.control in ("canceled", "failed"):
        raise ControlError(f"job {job_id} is {facts.control}")
    out = Launched()
    for record in facts.runs:
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.QUEUED and not run.tags.get(TAG_SUPERSEDED):
            stage = stage_of_job_name(run.job_name)
            if stage is None or not _cancel_queued(instance, run.run_id):
                continue
            instance.add_run_tags(run.run_id, {TAG_SUPERSEDED: "process"})
            first, last = run.tags[RANGE_START], run.tags[RANGE_END]
            extra = {TAG_REDECIDE: run.tags[TAG_REDECIDE]} if run.tags.get(TAG_REDECIDE) else None
            _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True, extra=extra), out, owner)
            return out, _message(stage, first, last, out)
    if facts.control == "paused":
        raise ControlError(f"job {job_id} is paused; resume it first")
    work = unfinished_work(facts)
    if not work:
        busy = bool(facts.active_runs())
        return out, "runs in progress cover the remaining chunks" if busy else "nothing left to process"
    stage, todo = next(iter(work.items()))
    first, last = plan_runs(todo, STAGE_SPECS[stage].chunks_per_run, _ordered(instance))[0]
    _execute(defs, instance, stage, _tags(facts, stage, first, last, narrow=True), out, owner)
    return out, _message(stage, first, last, out)


def _message(stage: str, first: str, last: str, out: Launched) -> str:
    outcome = f"failed: {out.errors[-1]}" if out.failed else "done"
    return f"{stage}: chunks {first} .. {last} {outcome}"


def _hold_tags(facts: JobFacts, run: dg.DagsterRun) -> dict[str, str]:
    """Tags that keep a run from starting anything after it: no cascade, no automatic retry."""
    stage = stage_of_job_name(run.job_name)
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


def cli_control(args: Any, instance: dg.DagsterInstance, settings: Any) -> int:
    """``matching-pipeline cancel|pause|resume|retry JOB``: print the job's view afterwards."""
    import json

    from matching_pipeline.jobs.notifications import notify_job_if_finished
    from matching_pipeline.jobs.status import job_status

    defs = None
    if args.command in ("resume", "retry") and not args.submit:
        from matching_pipeline.definitions import build_definitions

        defs = build_definitions(settings)
    try:
        if args.command == "cancel":
            cancel_job(instance, args.job, status="failed" if args.failed else "canceled", reason=args.reason)
            message = "canceled: queued runs canceled, running runs terminated"
        elif args.command == "pause":
            pause_job(instance, args.job)
            message = "paused: no new chunks start; runs in flight finish their chunks"
        elif args.command == "resume":
            launched = resume_job(instance, args.job, defs=defs)
            message = f"resumed: {len(launched.runs)} run(s) {'submitted' if args.submit else 'executed'}"
        else:
            launched = retry_failed(instance, args.job, defs=defs)
            message = f"retrying failed chunks and items: {len(launched.runs)} run(s) {'submitted' if args.submit else 'executed'}"
    except ControlError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if defs is not None:
        notify_job_if_finished(instance, args.job)
    view = job_status(instance, args.job)
    print(json.dumps({"message": message, "job": view}, indent=2) if args.json else f"{args.job}: {message}; status {view['status']}, {view['progressPercentage']}%")
    return 1 if args.command in ("resume", "retry") and defs is not None and launched.failed else 0
