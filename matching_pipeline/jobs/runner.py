"""Running stages through Dagster from Python: the CLI's engine, and the tests'.

Runs execute in this process against a real ``DagsterInstance`` (the one in ``DAGSTER_HOME``), so
they are recorded exactly like runs the daemon launches and show in the UI afterwards. The chunk
ranges and tags are the ones the sensors use, from ``defs/stages.py``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from matching_pipeline.defs.partitions import ensure_chunk_keys
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.defs.tags import MAX_RETRIES, TAG_BATCH, TAG_JOB, TAG_PROJECT
from matching_pipeline.jobs.pools import LIVE_STATUSES, free_slots, hold_pool_slot, process_tags
from matching_pipeline.results.faults import connection_fault
from matching_pipeline.results.store import Batch
from matching_pipeline.settings import pool_wait_timeout_seconds


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


def new_job_id(batch: Batch, kind: str = "cli", *, instance: dg.DagsterInstance | None = None) -> str:
    """A job id for ``batch``; with ``instance``, the id of the latest earlier ``kind`` job of the
    same batch if there is one: running the same command again continues that job (its status
    then ends ``completed``, not stuck half-way next to a second job)."""
    prefix = f"{batch.label}-{kind}-"
    if instance is not None:
        records = instance.get_run_records(dg.RunsFilter(tags={TAG_PROJECT: batch.project, TAG_BATCH: batch.label}))
        earlier = [r.dagster_run.tags.get(TAG_JOB, "") for r in sorted(records, key=lambda r: r.create_timestamp)]
        earlier = [job for job in earlier if job.startswith(prefix)]
        if earlier:
            return earlier[-1]
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def restore_interrupts() -> None:
    """Let SIGINT and SIGTERM stop this process again when it was started with SIGINT ignored.

    A shell starts background jobs (``cmd &`` in a script, ``nohup``-style wrappers, some CI
    runners) with SIGINT ignored, and Dagster, around every run executed in process, sets SIGTERM
    to whatever SIGINT's handler is. Left alone, the process then ignores SIGTERM, and so does
    every child it starts afterwards, inheriting the disposition: Dagster's compute-log tail
    processes, which it stops with SIGTERM and waits 30 s for each, add a minute to every run's
    end, and a cancel from another process can only end this one with SIGKILL. So the pipeline's
    in-process runners (the CLI, the tests, the benchmarks) take Python's usual handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; Dagster leaves other threads' runs alone too
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def ensure_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    """Add the chunk keys a run needs that the set lacks: new, or retired (``defs/retention.py``)."""
    ensure_chunk_keys(instance, keys)


def console_log_config(level: str) -> dict[str, object]:
    """Run config setting the level of Dagster's console logger (the only place it can be set for
    an in-process run: it is not a Python logger one could silence). Every event is still stored
    in the instance and shown in the UI whatever the level."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


QUIET = console_log_config("WARNING")
"""Run config that keeps Dagster's per-event console log out of the CLI's progress lines."""


def materialize_catalog(
    defs: dg.Definitions, instance: dg.DagsterInstance, run_config: Mapping[str, object] | None = None
) -> dg.ExecuteInProcessResult:
    result = defs.resolve_job_def("catalog_job").execute_in_process(
        instance=instance, run_config=QUIET if run_config is None else run_config, raise_on_error=False,
        tags=process_tags(),  # reaped if this process dies
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
    restore_interrupts()
    spec = STAGE_SPECS[stage]
    job = defs.resolve_job_def(spec.job_name)
    step = defs.resolve_assets_def(spec.asset_name).op
    run_id = str(uuid.uuid4())
    claimed = step.pool is not None and hold_pool_slot(
        instance, step.pool, run_id, step.name, timeout_s=pool_wait_timeout_seconds(), say=lambda text: say(f"[{stage}] {text}")
    )
    try:
        return job.execute_in_process(
            instance=instance,
            run_id=run_id,
            # No daemon retries a run executed here: say so, so that Dagster does not tag a
            # failure dagster/will_retry=true and the job's status does not wait for a retry.
            tags={**tags, **process_tags(owner), MAX_RETRIES: "0"},
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
    # storage gone: the daemon's free_slots_after_run_end_seconds or the next reaper frees it
    with contextlib.suppress(Exception):
        action()


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
    run_config: Mapping[str, object] | None = None,
) -> list[RunOutcome]:
    """Materialise ``stage`` for ``keys`` in runs of at most the stage's chunks-per-run."""
    spec = STAGE_SPECS[stage]
    position = {key: i for i, key in enumerate(keys)}
    outcomes = []
    ordered = ensure_chunk_keys(instance, keys)  # a retired batch's keys come back first
    for first, last in plan_runs(keys, spec.chunks_per_run, ordered):
        began = time.perf_counter()
        result = execute_stage_run(
            defs, instance, stage, run_tags(first, last, job_id=job_id, stages=stages), say=say, run_config=run_config
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
            lines = [line.rstrip() for line in error.message.splitlines() if line.strip()]
            if error.cls_name == "InputError":  # written for the user: its next lines name file, row and column
                return "\n".join(lines)
            # Otherwise one line: a database driver's message runs on with SQL and links.
            return lines[0].strip() if lines else (error.cls_name or "run failed")
    return "run failed"
