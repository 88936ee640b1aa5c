"""Webhooks: a real receiver on 127.0.0.1 checks the HMAC signature; failures never fail a job."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import dagster as dg
import pytest

from matching_pipeline.jobs import control
from matching_pipeline.jobs.notifications import SIGNATURE_HEADER, job_completed_webhook, notify_job_if_finished, verify
from matching_pipeline.jobs.status import job_status
from tests.helpers import ingest_items
from tests.servers.webhook_receiver import SECRET, Receiver


@pytest.fixture
def receiver(monkeypatch) -> Iterator[Receiver]:
    rec = Receiver([500, 503])  # two failures first: delivery must retry
    monkeypatch.setenv("MATCHING_WEBHOOK_URL", rec.url)
    monkeypatch.setenv("MATCHING_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("MATCHING_WEBHOOK_WAIT_MAX", "0.2")
    yield rec
    rec.close()


def test_completed_job_is_posted_once_signed_and_retried(job_settings, job_defs, instance, generated_sample, receiver, caplog) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 20)
    job = control.create_job(instance, batch, "enhanced")
    assert notify_job_if_finished(instance, job) is None  # pending: nothing to say yet
    control.process_next(instance, job, job_defs)

    # The run-status sensor, evaluated on the run that finished the job.
    (run,) = [r for r in instance.get_runs(dg.RunsFilter(tags={"matching/job": job})) if r.status == dg.DagsterRunStatus.SUCCESS]
    event = next(iter(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name="job_completed_webhook", dagster_instance=instance, dagster_run=run, dagster_event=event
    )
    with caplog.at_level(logging.INFO):
        result = job_completed_webhook(context)
    assert "notified completed" in str(result.skip_message if hasattr(result, "skip_message") else result)

    assert len(receiver.received) == 3  # 500, 503, then 200
    body, signature, valid = receiver.received[-1]
    assert valid and signature.startswith("sha256=")
    payload = json.loads(body)
    assert payload["event"] == "job.completed" and payload["job"] == job_status(instance, job)
    assert SECRET not in caplog.text and "token=abc" not in caplog.text

    # Once per terminal state: a second evaluation sends nothing.
    assert notify_job_if_finished(instance, job) is None and len(receiver.received) == 3


def test_a_failing_receiver_never_fails_the_job(job_settings, job_defs, instance, generated_sample, receiver, monkeypatch, caplog) -> None:
    receiver.answers[:] = [500] * 10
    monkeypatch.setenv("MATCHING_WEBHOOK_ATTEMPTS", "2")
    batch = ingest_items(job_settings, instance, generated_sample, 10)
    job = control.create_job(instance, batch, "enhanced")
    control.cancel_job(instance, job, status="failed", reason="operator")
    with caplog.at_level(logging.WARNING):
        assert notify_job_if_finished(instance, job) is None
    assert len(receiver.received) == 2 and all(valid for _, _, valid in receiver.received)
    assert json.loads(receiver.received[0][0])["event"] == "job.failed"
    assert "could not notify http://127.0.0.1" in caplog.text and SECRET not in caplog.text
    assert job_status(instance, job)["status"] == "failed"

    # A receiver that is down altogether is the same: logged, never raised.
    receiver.close()
    other = control.create_job(instance, batch, "ai")
    control.cancel_job(instance, other)
    assert notify_job_if_finished(instance, other) is None


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    import hashlib
    import hmac

    body = b'{"a":1}'
    expected = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verify("k", body, expected) and not verify("k", body + b" ", expected) and not verify("k", body, None)
