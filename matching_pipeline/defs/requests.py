"""Job requests: how the CLI and the HTTP API hand runs to the daemon through public Dagster APIs.

A process outside the code location (the API server, ``matching-pipeline resume --submit``)
cannot build a run the daemon can launch without Dagster's private code-location classes. So it
*records a request* instead, and :data:`job_requests_sensor`, which runs in the code location
under the daemon, turns each pending request into a ``dg.RunRequest`` (the documented way to
start runs). The daemon then launches it under the ``concurrency:`` limits like any sensor run.

Where a request is recorded: in the Dagster instance, the same record as the runs, so every
process that can read a job can read its requests and no second store has to be reachable from
the API, the daemon and the runs alike. A request is one key of the dynamic partitions
definition ``matching_job_requests`` (``instance.add_dynamic_partitions`` /
``get_dynamic_partitions`` / ``delete_dynamic_partition``, all public ``DagsterInstance``
methods). No asset uses that definition, so it never shows among the chunk partitions. The key
is the request itself as compact JSON (request id, job id, stage, state, run tags); a change of
state replaces the key.

Lifecycle: ``pending`` (waiting for the sensor) -> the sensor emits a ``RunRequest`` whose
``run_key`` is the request id and whose run carries ``matching/request=<id>``; once that run
exists the key is deleted (the run is the record from then on). ``paused``, ``canceled`` and
``superseded`` (``/process`` ran it in process) keys stay as the job's record of work that was
planned and never launched. Run-key de-duplication makes a re-emitted request harmless, and an
in-process run that took a request over carries the sensor's run-key tags, so the daemon sees the
key as used and never launches it as well.

No ``from __future__ import annotations`` here: this module defines a sensor.
"""

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.intervals import EVERY_DAEMON_LOOP
from matching_pipeline.defs.jobs import stage_jobs
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.defs.tags import RUN_KEY_TAG, SENSOR_NAME_TAG, TAG_JOB, TAG_REQUEST

REQUESTS = "matching_job_requests"
"""Name of the dynamic partitions definition that holds the requests (never attached to an asset)."""
SENSOR_NAME = "job_requests_sensor"
STATES = ("pending", "paused", "canceled", "failed", "superseded")


@dataclass(frozen=True)
class JobRequest:
    """One planned run of one stage over one chunk range, not launched yet."""

    id: str
    job: str
    stage: str
    tags: dict[str, str]
    state: str = "pending"
    created: float = field(default_factory=time.time)
    reason: str | None = None

    def key(self) -> str:
        body = {"id": self.id, "job": self.job, "stage": self.stage, "state": self.state, "created": round(self.created, 3), "tags": self.tags}
        if self.reason:
            body["reason"] = self.reason
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_key(cls, key: str) -> "JobRequest | None":
        try:
            body = json.loads(key)
            return cls(
                id=str(body["id"]), job=str(body["job"]), stage=str(body["stage"]), tags=dict(body["tags"]),
                state=str(body["state"]), created=float(body["created"]), reason=body.get("reason"),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def run_tags(self) -> dict[str, str]:
        """The tags of the run launched for this request (also used when ``/process`` takes it over)."""
        return {**self.tags, TAG_REQUEST: self.id, RUN_KEY_TAG: self.id, SENSOR_NAME_TAG: SENSOR_NAME}


def add_request(instance: dg.DagsterInstance, stage: str, tags: Mapping[str, str]) -> JobRequest:
    """Record a pending request for a run of ``stage`` with ``tags`` (which name the job)."""
    if stage not in STAGE_SPECS:
        raise ValueError(f"unknown stage {stage!r}")
    request = JobRequest(id=f"req-{uuid.uuid4().hex}", job=tags[TAG_JOB], stage=stage, tags=dict(tags))
    instance.add_dynamic_partitions(REQUESTS, [request.key()])
    return request


def list_requests(instance: dg.DagsterInstance, job_id: str | None = None) -> list[JobRequest]:
    """Requests recorded (of one job), oldest first."""
    found = []
    for key in instance.get_dynamic_partitions(REQUESTS):
        request = JobRequest.from_key(key)
        if request is not None and (job_id is None or request.job == job_id):
            found.append(request)
    return sorted(found, key=lambda r: r.created)


def set_state(instance: dg.DagsterInstance, request: JobRequest, state: str, reason: str | None = None) -> JobRequest:
    """Replace ``request``'s key by one in ``state`` (the old key is deleted first)."""
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    changed = JobRequest(request.id, request.job, request.stage, request.tags, state, request.created, reason or request.reason)
    instance.delete_dynamic_partition(REQUESTS, request.key())
    instance.add_dynamic_partitions(REQUESTS, [changed.key()])
    return changed


def forget(instance: dg.DagsterInstance, requests: Iterable[JobRequest]) -> None:
    for request in requests:
        instance.delete_dynamic_partition(REQUESTS, request.key())


def launched_runs(instance: dg.DagsterInstance, requests: Iterable[JobRequest]) -> dict[str, dg.DagsterRun]:
    """``{request id: run}`` for the requests a run exists for (launched, or taken over in process)."""
    ids = [r.id for r in requests]
    if not ids:
        return {}
    return {run.tags[TAG_REQUEST]: run for run in instance.get_runs(dg.RunsFilter(tags={TAG_REQUEST: ids}))}


@dg.sensor(
    name=SENSOR_NAME,
    jobs=[stage_jobs[stage] for stage in STAGES],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=EVERY_DAEMON_LOOP,
    description="Launches the runs that the CLI (--submit) and the HTTP API requested for their jobs.",
)
def job_requests_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    """Each pending request becomes one ``RunRequest`` (``run_key`` = request id); requests whose
    run exists are forgotten, since the run now records them."""
    instance = context.instance
    requests = list_requests(instance)
    pending = [r for r in requests if r.state == "pending"]
    if not pending:
        return dg.SkipReason("no pending job requests")
    launched = launched_runs(instance, pending)
    forget(instance, [r for r in pending if r.id in launched])
    todo = [r for r in pending if r.id not in launched]
    if not todo:
        return dg.SkipReason(f"{len(launched)} request(s) already launched")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(job_name=STAGE_SPECS[r.stage].job_name, run_key=r.id, tags={**r.tags, TAG_REQUEST: r.id})
            for r in todo
        ]
    )
