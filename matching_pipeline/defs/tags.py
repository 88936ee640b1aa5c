"""Every run-tag key the package sets or reads, in one module.

A tag is a contract, not a local detail: the sensors (inbox, cascade, requests, notifications,
schedules) write and read it, the job view (``job_facts.py``) reconstructs a job from it, the job
layer (CLI, API, control actions, pool reaping) filters runs by it, and runs launched earlier by
older code still carry it in the Dagster instance. A key renamed in one module and not another, or
a second spelling of the same key, silently splits a job in two or loses a control action. So each
key is written once, here, and every module imports it from here.

Keys under ``dagster/`` are Dagster's own (set by Dagster, or read by it: run keys, retries,
backfills, partition ranges); keys under ``matching/`` are this package's.
"""

from __future__ import annotations

# Dagster's own tags.

RANGE_START = "dagster/asset_partition_range_start"
"""First chunk key of a run that covers a range of partitions."""
RANGE_END = "dagster/asset_partition_range_end"
"""Last chunk key of a run that covers a range of partitions."""
PARTITION_TAG = "dagster/partition"
"""The chunk key of a run that covers one partition (materialised from the UI)."""
BACKFILL_TAG = "dagster/backfill"
"""The backfill a run belongs to: its id is the job id of every run of that backfill."""
RUN_KEY_TAG = "dagster/run_key"
"""The run key a sensor launched the run under (de-duplicates a re-emitted request)."""
SENSOR_NAME_TAG = "dagster/sensor_name"
"""The sensor that launched the run; with :data:`RUN_KEY_TAG`, marks a request's run key as used."""
WILL_RETRY = "dagster/will_retry"
"""Set by Dagster on a failed run when the daemon's run retries will re-execute it."""
MAX_RETRIES = "dagster/max_retries"
"""How often the daemon retries a failed run; ``0`` on runs executed in process and held runs."""

# This package's tags: what a job is.

TAG_JOB = "matching/job"
"""The job id a run belongs to (inbox sensor, CLI, API, schedules; copied on by the cascade)."""
TAG_PROJECT = "matching/project"
"""The project whose items the run decides."""
TAG_BATCH = "matching/batch"
"""The batch (one ingested item file) the run's chunks belong to."""
TAG_STAGES = "matching/stages"
"""Comma-separated stages the job should run; the cascade sensor starts the next one listed."""
TAG_PLAN = "matching/plan"
"""Every stage of the job, kept on runs whose ``matching/stages`` was narrowed (pause, retry)."""
TAG_REQUEST = "matching/request"
"""The id of the request a run was launched for (``requests.py``)."""
TAG_TRIGGER = "matching/trigger"
"""What started a run that is not part of the job's first pass: ``repair`` or ``catalog``."""
TAG_REDECIDE = "matching/redecide"
"""``failed``: decide only items this stage has no decision for or whose decision has an error;
``unmatched``: also those it decided without a match. Every other decision of the chunk is kept
as it is (used by retry-failed and the catalog-change re-run, see ``jobs/control.py``)."""

# This package's tags: what happened to a job.

TAG_CONTROL = "matching/control"
"""The last control action applied to the job: paused, resumed, canceled or failed."""
TAG_REASON = "matching/reason"
"""Why a job was canceled or marked failed (PATCH body ``reason``)."""
TAG_SUPERSEDED = "matching/superseded"
"""A queued run whose chunks ``/process`` executed in process instead: not a cancellation."""
TAG_NOTIFIED = "matching/notified"
"""The terminal status (completed, failed, canceled) a webhook was sent for (``notifications.py``)."""

# This package's tags: which process executes a run in process (``jobs/pools.py``).

TAG_HOST = "matching/host"
"""The host name of the process executing the run."""
TAG_PID = "matching/pid"
"""The process id executing the run, so a dead process's run can be failed and its slot freed."""
TAG_PID_STARTED = "matching/pid_started"
"""The process's start time (Linux clock ticks since boot), so a reused pid is not taken for it."""
TAG_OWNER = "matching/process"
"""What kind of process executes the run: ``cli`` (one command: ``cancel`` may stop it) or ``api``
(the long-lived API server, which ``cancel`` must not kill: its run stops at the next block)."""

# An asset tag, not a run tag.

STAGE_ASSET_TAG = "matching/stage"
"""Set on each stage asset (not on runs): the stage it computes, for filtering in the UI."""
