"""Webhook notifications: when a job completes, fails or is canceled, POST its status view.

The body is ``{"event": "job.completed", "job": <status view>}``, signed the Standard Webhooks way
(``clients/webhooks.py``: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) with
``MATCHING_WEBHOOK_SECRET``. Delivery is retried on connection errors, timeouts, 429 and 5xx. A
receiver that keeps failing is logged (host only, never the URL's path or query, never the
secret) and never fails a job: the sensors that send run *after* the run and catch everything.

Each terminal state of a job is notified once: the job's runs are tagged
``matching/notified=<status>`` when it was sent, so the record is the Dagster instance again.
The sensors watch every run of the code location (UI-launched runs and backfills included), so
every kind of job is notified; runs executed in process are not seen by the daemon, so their
callers (CLI, ``/process``) call :func:`notify_job_if_finished` themselves.

No ``from __future__ import annotations`` here: this module defines sensors.
"""

import logging
from typing import Any
from urllib.parse import urlsplit

import dagster as dg

from matching_pipeline.clients.webhooks import post_signed
from matching_pipeline.defs.job_facts import job_id_of_run, load_job
from matching_pipeline.defs.job_view import job_status
from matching_pipeline.defs.tags import TAG_NOTIFIED
from matching_pipeline.settings import current_settings, secret

TERMINAL = ("completed", "failed", "canceled")

log = logging.getLogger(__name__)


class _HideWebhookUrl(logging.Filter):
    """httpx logs every request's full URL at INFO; the webhook URL may carry a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        url = secret("MATCHING_WEBHOOK_URL")
        return not (url and url in record.getMessage())


logging.getLogger("httpx").addFilter(_HideWebhookUrl())


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def notify_job_if_finished(instance: dg.DagsterInstance, job_id: str, *, logger: Any = None) -> dict[str, Any] | None:
    """Send the job's view if it just reached a terminal state not notified yet. Never raises."""
    logger = logger or log
    url = secret("MATCHING_WEBHOOK_URL")
    if not url:
        return None
    try:
        settings = current_settings()
        facts = load_job(instance, job_id)
        view = job_status(instance, job_id, facts=facts) if facts else None
        if facts is None or view is None or view["status"] not in TERMINAL:
            return None
        if any(r.dagster_run.tags.get(TAG_NOTIFIED) == view["status"] for r in facts.runs):
            return None
        # Mark first: two sensors seeing the same end must not both send.
        for record in facts.runs:
            instance.add_run_tags(record.dagster_run.run_id, {TAG_NOTIFIED: view["status"]})
        payload = {"event": f"job.{view['status']}", "job": view}
        code = post_signed(
            url,
            payload,
            secret("MATCHING_WEBHOOK_SECRET"),
            attempts=settings.webhook_attempts,
            wait_max=settings.webhook_wait_max,
        )
        logger.info(f"notified {_host(url)} that job {job_id} is {view['status']} ({code})")
        return payload
    except Exception as exc:  # noqa: BLE001 - a failing receiver (or anything else here) never fails the job
        logger.warning(f"could not notify {_host(url)} about job {job_id}: {type(exc).__name__}: {exc}")
        return None


def _notify_from(context: dg.RunStatusSensorContext) -> None:
    """Always None: a run-status sensor ends its tick at the first run it answers with anything
    else, so a ``SkipReason`` per run would look at one run per interval and a job's end could
    wait behind every run that finished before it. What happened goes to the tick's log."""
    job_id = job_id_of_run(context.dagster_run)
    if not job_id:
        return
    if not secret("MATCHING_WEBHOOK_URL"):
        return
    sent = notify_job_if_finished(context.instance, job_id, logger=context.log)
    context.log.info(f"job {job_id}: {'notified ' + sent['job']['status'] if sent else 'nothing to notify'}")


_INTERVAL = current_settings().notify_interval_seconds


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS, name="job_completed_webhook",
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=_INTERVAL,
)
def job_completed_webhook(context: dg.RunStatusSensorContext) -> None:
    """POST the job's status view to MATCHING_WEBHOOK_URL when its last run succeeds."""
    _notify_from(context)


@dg.run_failure_sensor(
    name="job_failed_webhook", default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=_INTERVAL,
)
def job_failed_webhook(context: dg.RunFailureSensorContext) -> None:
    """POST the job's status view to MATCHING_WEBHOOK_URL when it fails (after run retries)."""
    _notify_from(context)


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.CANCELED, name="job_canceled_webhook",
    default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=_INTERVAL,
)
def job_canceled_webhook(context: dg.RunStatusSensorContext) -> None:
    """POST the job's status view to MATCHING_WEBHOOK_URL when it is canceled."""
    _notify_from(context)


notification_sensors = [job_completed_webhook, job_failed_webhook, job_canceled_webhook]
