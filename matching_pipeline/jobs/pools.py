"""Runs that died with their process, and the pool slots they hold.

A run executed in this process (the CLI's ``match``, ``resume``, ``retry``; the API's
``process``) records where it runs in its tags: host, pid and the pid's start time. When that
process is killed (``kill -9``, out of memory, machine lost), nothing else marks the run: it stays
STARTED for ever and keeps its slot of a limit-1 pool (``openai``, ``web_search``), so every later
AI step of every project waits behind it. The daemon frees slots of *finished* runs
(``run_monitoring.free_slots_after_run_end_seconds`` in ``dagster.yaml``) and marks dead runs it
launched itself, but it never launched these and often is not running at all under the CLI.

So before a process waits on a pool, it checks every run that holds or queues for the pool: a run
recorded on this host whose process is gone is marked failed and its slots are freed. A holder on
another host or still alive is waited for, visibly (which run, which job), with a sleep between
polls and up to a configurable time, then a clear error.

The wait itself is done here, not by Dagster's in-process executor: that executor polls a blocked
claim without sleeping (its ``interval_to_next_pending_claim_check`` is never positive), burning a
core for as long as the wait lasts. So the slot is claimed *before* ``execute_in_process``, under
the run id the run will have; Dagster's own claim for that run and step then finds it already
claimed. Slots are claimed and freed through ``instance.event_log_storage``, the same calls
Dagster's CLI (``dagster instance concurrency``), UI and daemon use; Dagster has no higher-level
public API for them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg

from matching_pipeline.defs.tags import TAG_HOST, TAG_JOB, TAG_OWNER, TAG_PID, TAG_PID_STARTED

LIVE_STATUSES = (
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
ORPHANED_CLAIM_AGE = timedelta(seconds=60)
"""A slot assigned this long ago to a run id that has no run record was claimed by a process that
died between claiming and creating its run (normally milliseconds apart)."""


class PoolWaitTimeout(RuntimeError):
    """The pool stayed busy, held by live runs, for longer than the configured wait."""


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of ``/proc/<pid>/stat`` (state, ..., starttime), or None off Linux / when gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # the command name (field 2) may hold spaces


def _start_ticks(pid: int) -> str | None:
    fields = _stat(pid)
    return fields[19] if fields else None  # field 22: starttime


def process_tags(owner: str = "cli") -> dict[str, str]:
    """Tags naming this process, for runs it executes in process."""
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_OWNER: owner}
    started = _start_ticks(os.getpid())
    if started:
        tags[TAG_PID_STARTED] = started
    return tags


def process_gone(tags: Mapping[str, str]) -> bool:
    """True only when the tags name a process on this host that no longer exists.

    Runs on other hosts, or without the tags (launched by the daemon), are never judged here.
    This assumes a host name names one process namespace: containers that share a host name
    but not their pids (an explicit ``hostname:`` on several containers) must not share a
    Dagster instance through the CLI.
    """
    if tags.get(TAG_HOST) != socket.gethostname() or not tags.get(TAG_PID, "").isdigit():
        return False
    pid = int(tags[TAG_PID])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by another user
        pass
    fields = _stat(pid)
    if fields and fields[0] in ("Z", "X"):  # a zombie has ended; only its exit status is left
        return True
    recorded, current = tags.get(TAG_PID_STARTED), fields[19] if fields else None
    return bool(recorded and current and recorded != current)  # the pid now belongs to another process


def _owner(run: dg.DagsterRun) -> str:
    return f"pid {run.tags.get(TAG_PID)} on {run.tags.get(TAG_HOST)}"


def end_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, why: str, *, canceled: bool = False) -> None:
    """Mark a run whose process is gone as failed (canceled if it was being canceled), free its slots."""
    if run.status in LIVE_STATUSES and (canceled or run.status == dg.DagsterRunStatus.CANCELING):
        instance.report_run_canceled(run, message=why)
    elif run.status in LIVE_STATUSES:
        instance.report_run_failed(run, message=why)
    free_slots(instance, run.run_id)


def free_slots(instance: dg.DagsterInstance, run_id: str) -> None:
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        storage.free_concurrency_slots_for_run(run_id)


def reap_dead_runs(instance: dg.DagsterInstance, run_ids: Iterable[str] | None = None) -> list[str]:
    """Fail the live runs of this host whose process is gone; returns their ids.

    With ``run_ids`` only those runs are looked at (the holders of a pool), otherwise every live
    run this host recorded.
    """
    if run_ids is not None:
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return []
        runs = instance.get_runs(dg.RunsFilter(run_ids=ids))
    else:
        runs = instance.get_runs(dg.RunsFilter(statuses=list(LIVE_STATUSES), tags={TAG_HOST: socket.gethostname()}))
    reaped = []
    for run in runs:
        if run.status in LIVE_STATUSES and process_gone(run.tags):
            end_dead_run(instance, run, f"the process running it ({_owner(run)}) is gone: killed or crashed")
            reaped.append(run.run_id)
    return reaped


def _pool_limited(instance: dg.DagsterInstance, pool: str) -> bool:
    """Whether steps of ``pool`` claim slots in this instance, creating the default slots if due."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return False
    granularity = storage.get_pool_config().pool_granularity
    if getattr(granularity, "value", granularity) == "run":  # enforced when the queue launches runs
        return False
    info = storage.get_concurrency_info(pool)
    if info.slot_count == 0:
        if not info.limit:
            return False  # no limit for this pool
        storage.initialize_concurrency_limit_to_default(pool)
    return True


def _orphaned_claims(instance: dg.DagsterInstance, pool: str, mine: str) -> list[str]:
    """Run ids holding ``pool`` that have no run record long after their slot was assigned."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    cutoff = datetime.now(UTC) - ORPHANED_CLAIM_AGE
    old = {
        step.run_id
        for step in info.pending_steps
        if step.run_id != mine and step.assigned_timestamp is not None and step.assigned_timestamp < cutoff
    }
    return [run_id for run_id in old if instance.get_run_by_id(run_id) is None]


def describe_holders(instance: dg.DagsterInstance, run_ids: Iterable[str]) -> str:
    parts = []
    for run_id in dict.fromkeys(run_ids):
        run = instance.get_run_by_id(run_id)
        if run is None:
            parts.append(f"run {run_id[:8]} (no run record yet)")
            continue
        where = f", {_owner(run)}" if TAG_PID in run.tags else ""
        parts.append(f"run {run_id[:8]} ({run.job_name}, job {run.tags.get(TAG_JOB, '?')}, {run.status.value}{where})")
    return "; ".join(parts) or "nobody (slots being reassigned)"


def hold_pool_slot(
    instance: dg.DagsterInstance,
    pool: str,
    run_id: str,
    step_key: str,
    *,
    timeout_s: float,
    poll_s: float = 2.0,
    say: Callable[[str], None] = print,
) -> bool:
    """Claim a slot of ``pool`` for ``run_id``'s step ``step_key``, waiting up to ``timeout_s``.

    Returns False when the pool needs no slot. Dead holders are reaped on every poll; the wait is
    announced once per change of holders. Raises :class:`PoolWaitTimeout` (after withdrawing the
    claim) when live runs keep the pool for longer than ``timeout_s``.
    """
    if not _pool_limited(instance, pool):
        return False
    storage = instance.event_log_storage
    try:
        return _wait_for_slot(instance, pool, run_id, step_key, timeout_s=timeout_s, poll_s=poll_s, say=say)
    except BaseException:  # timed out, Ctrl-C, storage lost: leave no claim queued for a run that never comes
        with contextlib.suppress(Exception):
            storage.free_concurrency_slot_for_step(run_id, step_key)
        raise


def _wait_for_slot(
    instance: dg.DagsterInstance,
    pool: str,
    run_id: str,
    step_key: str,
    *,
    timeout_s: float,
    poll_s: float,
    say: Callable[[str], None],
) -> bool:
    storage = instance.event_log_storage
    deadline = time.monotonic() + timeout_s
    announced = None
    while True:
        if storage.claim_concurrency_slot(pool, run_id, step_key).is_claimed:
            return True
        info = storage.get_concurrency_info(pool)
        others = [s.run_id for s in info.claimed_slots if s.run_id != run_id]
        others += [s.run_id for s in info.pending_steps if s.run_id != run_id]  # dead waiters ahead of us too
        reaped = reap_dead_runs(instance, others)
        orphans = _orphaned_claims(instance, pool, run_id)
        for orphan in orphans:
            free_slots(instance, orphan)
        if reaped or orphans:
            say(f"pool '{pool}': freed the slot of {len(reaped) + len(orphans)} run(s) whose process is gone")
            continue
        holders = describe_holders(instance, [s.run_id for s in info.claimed_slots if s.run_id != run_id])
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PoolWaitTimeout(
                f"gave up after {timeout_s:.0f}s waiting for pool '{pool}', held by {holders}; "
                f"cancel that job or raise MATCHING_POOL_WAIT_TIMEOUT_SECONDS"
            )
        if holders != announced:
            say(f"waiting for pool '{pool}' (limit {info.limit}): held by {holders}; giving up in {remaining:.0f}s")
            announced = holders
        time.sleep(min(poll_s, remaining))


def terminate_local_run(run: dg.DagsterRun, grace_s: float = 10.0) -> bool | None:
    """Stop the process executing ``run`` in process on this host: SIGTERM, then SIGKILL.

    Returns True when it stopped, False when it was already gone, None when it is not a CLI
    process of this host (the API server is never killed for one job) or is the caller itself.
    """
    if run.tags.get(TAG_HOST) != socket.gethostname() or not run.tags.get(TAG_PID, "").isdigit():
        return None
    if run.tags.get(TAG_OWNER, "cli") != "cli":
        return None
    pid = int(run.tags[TAG_PID])
    if pid == os.getpid() or process_gone(run.tags):
        return None if pid == os.getpid() else False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if process_gone(run.tags):
                return True
            time.sleep(0.1)
    return process_gone(run.tags)
