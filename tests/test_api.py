"""The jobs HTTP API over real HTTP: uvicorn on a random port of 127.0.0.1, httpx as the client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from matching_pipeline.api import create_app
from tests.helpers import ingest_items

TOKEN = "t0ken-for-tests"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(job_settings, job_defs, instance, generated_sample) -> Iterator[httpx.Client]:
    ingest_items(job_settings, instance, generated_sample, 30)
    app = create_app(instance, settings=job_settings, defs=job_defs, token=TOKEN)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        yield client
    server.should_exit = True
    thread.join(10)


def test_every_endpoint_success_and_errors(api: httpx.Client) -> None:
    # auth
    assert httpx.get(f"{api.base_url}/api/jobs/x").status_code == 401
    wrong = httpx.get(f"{api.base_url}/api/jobs/x", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json() == {"success": False, "error": "missing or invalid bearer token"}

    # create: bad bodies, unknown project, then a job
    assert api.post("/api/jobs/create", content=b"{not json").status_code == 400
    assert api.post("/api/jobs/create", json=["acme"]).json()["error"] == "request body must be a JSON object"
    assert "projectId" in api.post("/api/jobs/create", json={"jobType": "all"}).json()["error"]
    bad_type = api.post("/api/jobs/create", json={"projectId": "acme", "jobType": "magic"})
    assert bad_type.status_code == 400 and "enhanced, ai, web-search, all" in bad_type.json()["error"]
    assert api.post("/api/jobs/create", json={"projectId": "nobody", "jobType": "all"}).status_code == 404
    created = api.post("/api/jobs/create", json={"projectId": "acme", "jobType": "all"})
    assert created.status_code == 201 and created.json()["success"] is True
    job = created.json()["job"]
    assert job["status"] == "pending" and job["jobType"] == "all" and job["projectId"] == "acme" and job["runs"] == {"QUEUED": 1}
    job_id = job["id"]

    # get
    assert api.get(f"/api/jobs/{job_id}").json()["job"]["id"] == job_id
    missing = api.get("/api/jobs/no-such-job")
    assert missing.status_code == 404 and missing.json() == {"success": False, "error": "job 'no-such-job' not found"}
    assert api.get("/api/nothing").status_code == 404 and api.delete(f"/api/jobs/{job_id}").status_code == 405

    # process: the queued enhanced run is claimed and executed here
    processed = api.post(f"/api/jobs/{job_id}/process")
    assert processed.status_code == 200, processed.text
    body = processed.json()
    assert body["message"].startswith("enhanced: chunks") and body["message"].endswith("done")
    assert body["job"]["status"] == "processing" and body["job"]["progressPercentage"] == pytest.approx(33.3)
    assert api.post("/api/jobs/no-such-job/process").status_code == 404

    # pause / resume / retry
    assert api.patch(f"/api/jobs/{job_id}", json={"status": "done"}).status_code == 400
    paused = api.patch(f"/api/jobs/{job_id}", json={"status": "paused"}).json()
    assert paused["job"]["paused"] is True and paused["job"]["status"] == "pending"
    refused = api.post(f"/api/jobs/{job_id}/process")
    assert refused.status_code == 409 and "paused" in refused.json()["error"]
    resumed = api.post(f"/api/jobs/{job_id}/resume").json()
    assert resumed["message"] == "job resumed: 1 run(s) submitted" and resumed["job"]["runs"]["QUEUED"] == 1
    assert api.post(f"/api/jobs/{job_id}/retry").status_code == 409  # a run is queued
    assert api.post(f"/api/jobs/{job_id}/process").json()["job"]["stages"][1]["doneChunks"] == 3
    listed = api.get("/api/jobs", params={"projectId": "acme"}).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]

    # cancel via PATCH, with a reason; a second cancel is harmless
    canceled = api.patch(f"/api/jobs/{job_id}", json={"status": "canceled", "reason": "stop"}).json()
    assert canceled["job"]["status"] == "canceled" and canceled["job"]["error"] == "stop"
    assert api.patch(f"/api/jobs/{job_id}", json={"status": "canceled"}).status_code == 200
    assert api.post(f"/api/jobs/{job_id}/process").status_code == 409
    assert api.patch("/api/jobs/no-such-job", json={"status": "canceled"}).status_code == 404
    assert api.patch(f"/api/jobs/{job_id}", json={"status": "failed", "reason": 5}).status_code == 400

    other = api.post("/api/jobs/create", json={"projectId": "acme", "jobType": "enhanced"}).json()["job"]["id"]
    marked = api.patch(f"/api/jobs/{other}", json={"status": "failed", "reason": "bad input file"}).json()["job"]
    assert marked["status"] == "failed" and marked["error"] == "bad input file"
