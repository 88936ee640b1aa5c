"""Running stages through Dagster from Python: the CLI's engine, and the tests'.

Runs execute in this process against a real ``DagsterInstance`` (the one in ``DAGSTER_HOME``), so
they are recorded exactly like runs the daemon launches and show in the UI afterwards. The chunk
ranges and tags are the ones the sensors use, from ``defs/stages.py``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.stages import STAGE_SPECS, plan_runs, run_tags
from matching_pipeline.store import Batch


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
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    if not result.success:
        raise RuntimeError(f"catalog run {result.run_id} failed: {_first_error(result)}")
    return result


def run_stage(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    stage: str,
    keys: Sequence[str],
    *,
    job_id: str,
    stages: Sequence[str],
    on_run: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Materialise ``stage`` for ``keys`` in runs of at most the stage's chunks-per-run."""
    spec = STAGE_SPECS[stage]
    job = defs.resolve_job_def(spec.job_name)
    position = {key: i for i, key in enumerate(keys)}
    outcomes = []
    ordered = instance.get_dynamic_partitions(chunk_partitions.name)
    for first, last in plan_runs(keys, spec.chunks_per_run, ordered):
        began = time.perf_counter()
        result = job.execute_in_process(
            instance=instance,
            tags=run_tags(first, last, job_id=job_id, stages=stages),
            run_config=QUIET,
            raise_on_error=False,
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
            return error.message.strip()
    return "run failed"
