"""Webhook notifications: when a job completes, fails or is canceled, POST its status view.

The body is the status view as JSON (``{"event": "job.completed", "job": {...}}``), signed with
HMAC-SHA256 over the exact body bytes using ``MATCHING_WEBHOOK_SECRET``; the signature travels in
``X-Matching-Signature: sha256=<hex>``. Delivery is retried with exponential backoff (tenacity) on
connection errors, timeouts, 429 and 5xx. A receiver that keeps failing is logged (host only, never
the URL's query or the secret) and never fails a job: the sensors that send run *after* the run and
catch everything.

Each terminal state of a job is notified once: the job's runs are tagged
``matching/notified=<status>`` when it was sent, so the record is the Dagster instance again.

No ``from __future__ import annotations`` here: this module defines sensors.
"""

import hashlib
import hmac
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.jobs import stage_jobs
from matching_pipeline.defs.stages import TAG_JOB
from matching_pipeline.jobs.status import job_status, load_job

TAG_NOTIFIED = "matching/notified"
SIGNATURE_HEADER = "X-Matching-Signature"
TERMINAL = ("completed", "failed", "canceled")

log = logging.getLogger(__name__)


class _HideWebhookUrl(logging.Filter):
    """httpx logs every request's full URL at INFO; the webhook URL may carry a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        url = os.environ.get("MATCHING_WEBHOOK_URL")
        return not (url and url in record.getMessage())


logging.getLogger("httpx").addFilter(_HideWebhookUrl())


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header)


class WebhookError(Exception):
    pass


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, WebhookError) and "retryable" in str(exc)


def post_signed(
    url: str,
    payload: dict[str, Any],
    secret: str | None,
    *,
    attempts: int | None = None,
    wait_max: float | None = None,
    timeout: float = 10.0,
) -> int:
    """POST ``payload`` as JSON with the signature header; retries; returns the final status code."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "matching-pipeline"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    attempts = attempts or int(os.environ.get("MATCHING_WEBHOOK_ATTEMPTS", "4"))
    wait_max = wait_max if wait_max is not None else float(os.environ.get("MATCHING_WEBHOOK_WAIT_MAX", "8"))

    @retry(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=wait_max),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    def _send() -> int:
        response = httpx.post(url, content=body, headers=headers, timeout=timeout)
        if response.status_code == 429 or response.status_code >= 500:
            raise WebhookError(f"receiver answered {response.status_code} (retryable)")
        if response.status_code >= 400:
            raise WebhookError(f"receiver answered {response.status_code}")
        return response.status_code

    return _send()


def _host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}"


def notify_job_if_finished(
    instance: dg.DagsterInstance, job_id: str, *, logger: Any = None
) -> dict[str, Any] | None:
    """Send the job's view if it just reached a terminal state not notified yet. Never raises."""
    logger = logger or log
    url = os.environ.get("MATCHING_WEBHOOK_URL")
    if not url:
        return None
    try:
        facts = load_job(instance, job_id)
        view = job_status(instance, job_id, facts=facts) if facts else None
        if view is None or view["status"] not in TERMINAL:
            return None
        if any(r.dagster_run.tags.get(TAG_NOTIFIED) == view["status"] for r in facts.runs):
            return None
        # Mark first: two sensors seeing the same end must not both send.
        for record in facts.runs:
            instance.add_run_tags(record.dagster_run.run_id, {TAG_NOTIFIED: view["status"]})
        payload = {"event": f"job.{view['status']}", "job": view}
        code = post_signed(url, payload, os.environ.get("MATCHING_WEBHOOK_SECRET"))
        logger.info(f"notified {_host(url)} that job {job_id} is {view['status']} ({code})")
        return payload
    except Exception as exc:  # a failing receiver never fails the job
        logger.warning(f"could not notify {_host(url)} about job {job_id}: {type(exc).__name__}: {exc}")
        return None


def _notify_from(context: dg.RunStatusSensorContext) -> dg.SkipReason:
    job_id = context.dagster_run.tags.get(TAG_JOB)
    if not job_id:
        return dg.SkipReason("run belongs to no matching job")
    if not os.environ.get("MATCHING_WEBHOOK_URL"):
        return dg.SkipReason("MATCHING_WEBHOOK_URL is not set")
    sent = notify_job_if_finished(context.instance, job_id, logger=context.log)
    return dg.SkipReason(f"job {job_id}: {'notified ' + sent['job']['status'] if sent else 'nothing to notify'}")


_common = dict(
    monitored_jobs=[stage_jobs[s] for s in STAGES],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(os.environ.get("MATCHING_NOTIFY_INTERVAL_SECONDS", "30")),
)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="job_completed_webhook", **_common)
def job_completed_webhook(context: dg.RunStatusSensorContext) -> dg.SkipReason:
    """POST the job's status view to MATCHING_WEBHOOK_URL when its last run succeeds."""
    return _notify_from(context)


@dg.run_failure_sensor(name="job_failed_webhook", **_common)
def job_failed_webhook(context: dg.RunFailureSensorContext) -> dg.SkipReason:
    """POST the job's status view to MATCHING_WEBHOOK_URL when it fails (after run retries)."""
    return _notify_from(context)


@dg.run_status_sensor(run_status=dg.DagsterRunStatus.CANCELED, name="job_canceled_webhook", **_common)
def job_canceled_webhook(context: dg.RunStatusSensorContext) -> dg.SkipReason:
    """POST the job's status view to MATCHING_WEBHOOK_URL when it is canceled."""
    return _notify_from(context)


notification_sensors = [job_completed_webhook, job_failed_webhook, job_canceled_webhook]
