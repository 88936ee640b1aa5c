"""Running stages through Dagster from Python: the CLI's engine, and the tests'.

Runs execute in this process against a real ``DagsterInstance`` (the one in ``DAGSTER_HOME``), so
they are recorded exactly like runs the daemon launches and show in the UI afterwards. The chunk
ranges and tags are the ones the sensors use, from ``defs/stages.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.results.faults import connection_fault
from matching_pipeline.jobs.pools import LIVE_STATUSES, free_slots, hold_pool_slot, process_tags
from matching_pipeline.settings import pool_wait_timeout_seconds
from matching_pipeline.results.store import Batch


@dataclass(frozen=True)
class RunOutcome:
    stage: str
    run_id: str
    first: str
    last: str
    chunks: int
    success: bool
    seconds: float
    error: str | None = None


def new_job_id(batch: Batch, kind: str = "cli") -> str:
    return f"{batch.label}-{kind}-{uuid.uuid4().hex[:6]}"


def ensure_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    existing = set(instance.get_dynamic_partitions(chunk_partitions.name))
    missing = [key for key in keys if key not in existing]
    if missing:
        instance.add_dynamic_partitions(chunk_partitions.name, missing)


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Run config that keeps Dagster's per-event console log out of the CLI's progress lines; every
event is still stored in the instance and shown in the UI."""


def materialize_catalog(defs: dg.Definitions, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("catalog_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False, tags=process_tags()  # reaped if this process dies
    )
    if not result.success:
        raise RuntimeError(f"catalog run {result.run_id} failed: {_first_error(result)}")
    return result


def execute_stage_run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    stage: str,
    tags: Mapping[str, str],
    *,
    owner: str = "cli",
    run_config: Mapping[str, object] | None = None,
    say: Callable[[str], None] = print,
) -> dg.ExecuteInProcessResult:
    """Execute one run of ``stage`` in this process: the one way runs are executed in process.

    The run is tagged with this process (``pools.process_tags``) so that, should the process
    die, the next one can tell and fail the run; its pool slot is claimed here first, with a
    visible, bounded, sleeping wait (see ``pools.py`` for why not inside Dagster), and freed
    however the run ends. When the run cannot even be recorded (a storage fault), it is marked
    failed on the way out if the storage allows, so it is never left NOT_STARTED or STARTED.
    """
    spec = STAGE_SPECS[stage]
    job = defs.resolve_job_def(spec.job_name)
    step = defs.resolve_assets_def(spec.asset_name).op
    run_id = str(uuid.uuid4())
    claimed = bool(step.pool) and hold_pool_slot(
        instance, step.pool, run_id, step.name, timeout_s=pool_wait_timeout_seconds(), say=lambda text: say(f"[{stage}] {text}")
    )
    try:
        return job.execute_in_process(
            instance=instance,
            run_id=run_id,
            tags={**tags, **process_tags(owner)},
            run_config=QUIET if run_config is None else run_config,
            raise_on_error=False,
        )
    except BaseException as exc:
        _fail_unfinished(instance, run_id, connection_fault(exc) or f"interrupted: {type(exc).__name__}")
        raise
    finally:
        if claimed:
            _quietly(lambda: free_slots(instance, run_id))


def _fail_unfinished(instance: dg.DagsterInstance, run_id: str, cause: str) -> None:
    """Best effort, once: with the storage down each call already retries for seconds, and the
    next process reaps the run anyway (``pools.reap_dead_runs``: its process is gone by then)."""
    try:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in LIVE_STATUSES:
            instance.report_run_failed(run, message=cause)
    except Exception:
        pass


def _quietly(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:  # storage gone: the daemon's free_slots_after_run_end_seconds or the next reaper frees it
        pass


def run_stage(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    stage: str,
    keys: Sequence[str],
    *,
    job_id: str,
    stages: Sequence[str],
    on_run: Callable[[RunOutcome], None] | None = None,
    say: Callable[[str], None] = print,
) -> list[RunOutcome]:
    """Materialise ``stage`` for ``keys`` in runs of at most the stage's chunks-per-run."""
    spec = STAGE_SPECS[stage]
    position = {key: i for i, key in enumerate(keys)}
    outcomes = []
    ordered = instance.get_dynamic_partitions(chunk_partitions.name)
    for first, last in plan_runs(keys, spec.chunks_per_run, ordered):
        began = time.perf_counter()
        result = execute_stage_run(
            defs, instance, stage, run_tags(first, last, job_id=job_id, stages=stages), say=say
        )
        outcome = RunOutcome(
            stage=stage,
            run_id=result.run_id,
            first=first,
            last=last,
            chunks=position[last] - position[first] + 1,
            success=result.success,
            seconds=time.perf_counter() - began,
            error=None if result.success else _first_error(result),
        )
        outcomes.append(outcome)
        if on_run:
            on_run(outcome)
        if not result.success:
            break
    return outcomes


def _first_error(result: dg.ExecuteInProcessResult) -> str:
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            # An exception from our code arrives wrapped ("Error occurred while executing op ..."):
            # the exception itself is what the user needs to read.
            while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
                error = error.cause
            # One line: a database driver's message runs on with SQL and links.
            return next((line.strip() for line in error.message.splitlines() if line.strip()), error.cls_name)
    return "run failed"
