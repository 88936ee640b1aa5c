"""Webhooks: a real receiver on 127.0.0.1 verifies the Standard Webhooks signature with the
``standardwebhooks`` library and refuses replays; failures never fail a job."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import dagster as dg
import pytest

from matching_pipeline.clients.webhooks import post_signed, signed_headers, verify
from matching_pipeline.defs.notifications import job_completed_webhook, notify_job_if_finished
from matching_pipeline.jobs import control
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


def test_completed_job_is_posted_once_signed_and_retried(job_settings, job_defs, instance, generated_sample, receiver, caplog, capfd) -> None:
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
    assert result is None  # a run-status sensor that answers None goes on to the next finished run
    sensor_log = capfd.readouterr().err  # the sensor context's log (Dagster's console handler)
    assert f"job {job}: notified completed" in sensor_log and SECRET not in sensor_log and "token=abc" not in sensor_log

    assert len(receiver.received) == 3  # 500, 503, then 200
    body, headers, valid = receiver.received[-1]
    assert valid and headers["webhook-signature"].startswith("v1,") and headers["webhook-id"].startswith("msg_")
    assert len({h["webhook-id"] for _, h, _ in receiver.received}) == 1  # retries carry the same message id
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


def test_signature_is_standard_webhooks_and_replays_are_refused(receiver) -> None:
    from datetime import UTC, datetime, timedelta

    body = '{"a":1}'
    headers = signed_headers("k", body)
    assert verify("k", body, headers) and not verify("k", body + " ", headers) and not verify("other", body, headers)
    assert not verify("k", body, {k: v for k, v in headers.items() if k != "webhook-signature"})
    stale = signed_headers("k", body, now=datetime.now(UTC) - timedelta(minutes=10))
    assert not verify("k", body, stale)  # too old: a captured message cannot be replayed later
    # A Standard Webhooks secret (whsec_ + base64) works as other senders and receivers use it.
    assert verify("whsec_" + "a2V5LWJ5dGVz", body, signed_headers("whsec_a2V5LWJ5dGVz", body))

    # The receiver refuses a message id it has accepted before (a replay of a delivered message).
    receiver.answers[:] = []
    assert post_signed(receiver.url, {"a": 1}, SECRET, attempts=1) == 200
    raw, first, valid = receiver.received[-1]
    assert valid
    import httpx

    replayed = httpx.post(receiver.url, content=raw, headers={**first, "content-type": "application/json"})
    assert replayed.status_code == 409 and receiver.received[-1][2] is False
