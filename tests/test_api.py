"""The jobs HTTP API over real HTTP: uvicorn on a random port of 127.0.0.1, httpx as the client."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pandas as pd
import pytest

from matching_pipeline.api import create_app
from tests.helpers import ingest_items, serve_app

TOKEN = "t0ken-for-tests"


def _served(app: object) -> AbstractContextManager[httpx.Client]:
    """``app`` under uvicorn on a free port of 127.0.0.1, and a client that sends the token."""
    return serve_app(app, token=TOKEN, timeout=120)


@pytest.fixture
def api(job_settings, job_defs, instance, generated_sample) -> Iterator[httpx.Client]:
    ingest_items(job_settings, instance, generated_sample, 30)
    with _served(create_app(instance, settings=job_settings, defs=job_defs, token=TOKEN)) as client:
        yield client


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


# -- the API's description, health, and bad input ---------------------------------------------------


def test_openapi_docs_and_healthz_are_served_without_the_token(api: httpx.Client) -> None:
    stranger = httpx.Client(base_url=str(api.base_url))
    health = stranger.get("/healthz")
    assert health.status_code == 200 and health.json() == {"success": True, "status": "ok"}
    assert stranger.get("/api/jobs").status_code == 401  # everything else still needs it

    schema = stranger.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path, method in [
        ("/api/jobs/create", "post"), ("/api/jobs", "get"), ("/api/jobs/{job_id}", "get"), ("/api/jobs/{job_id}", "patch"),
        ("/api/jobs/{job_id}/process", "post"), ("/api/jobs/{job_id}/pause", "post"), ("/api/jobs/{job_id}/resume", "post"),
        ("/api/jobs/{job_id}/retry", "post"), ("/api/projects/{project}/review", "get"),
        ("/api/projects/{project}/review/{item_id}", "post"), ("/api/projects/{project}/items", "post"), ("/healthz", "get"),
    ]:
        operation = paths[path][method]
        assert "422" not in operation["responses"], (path, method)  # validation errors answer 400
        assert operation["security"] == ([] if path == "/healthz" else [{"bearer": []}]), path
    create = paths["/api/jobs/create"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    components = schema.json()["components"]["schemas"]
    body = components[create["$ref"].rsplit("/", 1)[1]]
    assert body["additionalProperties"] is False and body["required"] == ["projectId"]
    assert set(paths["/api/projects/{project}/items"]["post"]["requestBody"]["content"]) == {
        "text/csv", "application/x-ndjson", "multipart/form-data"
    }
    docs = stranger.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    stranger.close()


def test_bad_input_answers_400_in_the_envelope_never_500(api: httpx.Client) -> None:
    cases = {
        "deeply nested": api.post("/api/jobs/create", content=b"[" * 200_000 + b"]" * 200_000, headers={"Content-Type": "application/json"}),
        "nested inside a field": api.post("/api/jobs/create", content=b'{"projectId": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
        "invalid JSON": api.post("/api/jobs/create", content=b'{"projectId": "acme",}'),
        "invalid UTF-8": api.post("/api/jobs/create", content=b'{"projectId": "ac\xffme"}', headers={"Content-Type": "application/json"}),
        "huge integer": api.post("/api/jobs/create", content=b'{"projectId": "acme", "batchId": ' + b"9" * 10_000 + b"}"),
        "projectId a number": api.post("/api/jobs/create", json={"projectId": 5}),
        "batchId a string": api.post("/api/jobs/create", json={"projectId": "acme", "batchId": "1"}),
        "batchId a bool": api.post("/api/jobs/create", json={"projectId": "acme", "batchId": True}),
        "empty projectId": api.post("/api/jobs/create", json={"projectId": ""}),
        "empty body": api.patch("/api/jobs/x", content=b""),
        "not JSON content type": api.post("/api/jobs/create", content=b'{"projectId": "acme"}', headers={"Content-Type": "text/plain"}),
        "status a list": api.patch("/api/jobs/x", json={"status": ["paused"]}),
        "limit not a number": api.get("/api/projects/acme/review", params={"limit": "many"}),
        # Control characters (PostgreSQL refuses NUL in text) in a path, a query and a body.
        "NUL in a job id": api.get("/api/jobs/b1%00x"),
        "NUL in a project": api.get("/api/projects/ac%00me/review"),
        "control character in a query": api.get("/api/jobs", params={"projectId": "ac\x01me"}),
        "NUL in projectId": api.post("/api/jobs/create", json={"projectId": "ac\u0000me"}),
        "NUL in a reason": api.patch("/api/jobs/x", json={"status": "canceled", "reason": "a\u0000b"}),
    }
    for what, response in cases.items():
        assert response.status_code == 400, (what, response.status_code, response.text)
        body = response.json()
        assert body["success"] is False and isinstance(body["error"], str) and body["error"], what
    assert cases["deeply nested"].json()["error"] == "request body is nested too deeply"
    assert "UTF-8" in cases["invalid UTF-8"].json()["error"]
    assert cases["invalid JSON"].json()["error"].startswith("request body is not valid JSON")
    assert cases["batchId a string"].json()["error"].startswith("batchId:")
    assert "application/json" in cases["not JSON content type"].json()["error"]
    assert cases["NUL in projectId"].json()["error"] == "projectId must not contain control characters"

    # Unknown fields are refused by name, and no job is created on some other batch.
    unknown = api.post("/api/jobs/create", json={"projectId": "acme", "jobType": "all", "items": [{"item_id": "x"}], "batchID": 1})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unknown fields 'items', 'batchID' (allowed: projectId, jobType, batchId)"
    assert api.get("/api/jobs", params={"projectId": "acme"}).json()["jobs"] == []
    assert api.patch("/api/jobs/x", json={"status": "paused", "why": "x"}).json()["error"] == "unknown field 'why' (allowed: status, reason)"
    mixed = api.post("/api/projects/acme/review/i1", json={"catalogId": 3, "note": "x"}).json()["error"]
    assert mixed == "catalogId: Input should be a valid string; unknown field 'note' (allowed: catalog_id)"


def test_bodies_over_the_limit_answer_413_by_header_and_by_stream(job_settings, job_defs, instance) -> None:
    with _served(create_app(instance, settings=job_settings, defs=job_defs, token=TOKEN, max_body_bytes=4096)) as client:
        small = client.post("/api/jobs/create", json={"projectId": "nobody"})
        assert small.status_code == 404  # under the limit: read and answered as usual
        declared = client.post("/api/projects/acme/items", content=b"item_id,description\n" + b"x,y\n" * 2000, headers={"Content-Type": "text/csv"})
        assert declared.status_code == 413 and declared.json() == {
            "success": False, "error": "request body is larger than 4096 bytes (MATCHING_API_MAX_BODY_BYTES)"
        }

        def chunks():  # no Content-Length: only counting the stream catches it
            yield b"item_id,description\n"
            for _ in range(100):
                yield b"x,y\n" * 20

        streamed = client.post("/api/projects/acme/items", content=chunks(), headers={"Content-Type": "text/csv"})
        assert "content-length" not in streamed.request.headers
        assert streamed.status_code == 413 and "4096 bytes" in streamed.json()["error"]
        json_streamed = client.post("/api/jobs/create", content=(b" " * 1000 for _ in range(10)), headers={"Content-Type": "application/json"})
        assert json_streamed.status_code == 413
        # A stranger's large body is refused for the token before anything is read.
        assert httpx.post(f"{client.base_url}/api/jobs/create", content=b" " * 10_000).status_code == 401

    # The default limit (settings.api_max_body_bytes, 10 MB) applies without configuration.
    with _served(create_app(instance, settings=job_settings, defs=job_defs, token=TOKEN)) as client:
        big = client.post("/api/jobs/create", content=b" " * (11 * 1024 * 1024), headers={"Content-Type": "application/json"})
        assert big.status_code == 413 and "10485760 bytes" in big.json()["error"]


def test_the_body_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from matching_pipeline.settings import Settings

    monkeypatch.delenv("MATCHING_API_MAX_BODY_BYTES", raising=False)
    assert Settings.from_env().api_max_body_bytes == 10 * 1024 * 1024
    monkeypatch.setenv("MATCHING_API_MAX_BODY_BYTES", "2048")
    assert Settings.from_env().api_max_body_bytes == 2048


# -- uploading items ----------------------------------------------------------------------------------


def _rows(sample, start: int, n: int) -> pd.DataFrame:
    return pd.read_csv(sample["items"], dtype=str, keep_default_na=False).iloc[start : start + n]


def test_uploaded_items_become_a_batch_a_job_can_process(api: httpx.Client, instance, generated_sample) -> None:
    frame = _rows(generated_sample, 40, 25)
    csv_body = frame.to_csv(index=False).encode()
    uploaded = api.post("/api/projects/shop2/items", params={"filename": "../../etc/spring items.csv"}, content=csv_body, headers={"Content-Type": "text/csv"})
    assert uploaded.status_code == 201, uploaded.text
    batch = uploaded.json()["batch"]
    assert uploaded.json()["success"] is True
    assert (batch["project"], batch["itemCount"], batch["chunkCount"], batch["isNew"]) == ("shop2", 25, 3, True)
    assert batch["sourceName"] == "spring_items.csv"  # the client's base name, made safe
    partitions = set(instance.get_dynamic_partitions("chunks"))
    assert {batch["firstChunk"], batch["lastChunk"]} <= partitions

    again = api.post("/api/projects/shop2/items", content=csv_body, headers={"Content-Type": "text/csv; charset=utf-8"})
    assert again.status_code == 200 and again.json()["batch"]["id"] == batch["id"] and again.json()["batch"]["isNew"] is False

    # A job on the uploaded batch runs at once: its chunks are partitions already.
    created = api.post("/api/jobs/create", json={"projectId": "shop2", "jobType": "enhanced", "batchId": batch["id"]})
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    processed = api.post(f"/api/jobs/{job_id}/process").json()
    assert processed["message"].endswith("done") and processed["job"]["stages"][0]["doneChunks"] == 3
    assert processed["job"]["totalItems"] == 25

    jsonl = _rows(generated_sample, 70, 12).to_json(orient="records", lines=True).encode()
    lines = api.post("/api/projects/shop2/items", content=jsonl, headers={"Content-Type": "application/x-ndjson"})
    assert lines.status_code == 201, lines.text
    assert (lines.json()["batch"]["itemCount"], lines.json()["batch"]["chunkCount"]) == (12, 2)
    assert lines.json()["batch"]["id"] != batch["id"]

    multipart = api.post(
        "/api/projects/shop3/items", files={"file": ("march.csv", _rows(generated_sample, 90, 5).to_csv(index=False), "text/csv")}
    )
    assert multipart.status_code == 201, multipart.text
    assert multipart.json()["batch"]["sourceName"] == "march.csv" and multipart.json()["batch"]["itemCount"] == 5


def test_rejected_uploads_name_row_and_column(api: httpx.Client, generated_sample) -> None:
    def upload(body: bytes, content_type: str = "text/csv", project: str = "shop4") -> httpx.Response:
        return api.post(f"/api/projects/{project}/items", content=body, headers={"Content-Type": content_type})

    bad = upload(b"item_id,description\nA1,first\nA2,\nA1,again\n")
    assert bad.status_code == 400
    answer = bad.json()
    assert answer["success"] is False and answer["error"].startswith("upload.csv: rejected: ")
    assert "/tmp" not in answer["error"] and "matching-upload" not in answer["error"]  # no server paths
    problems = {(p["row"], p["column"]) for p in answer["problems"]}
    assert (2, "description") in problems
    assert any(p["column"] == "item_id" and "duplicate" in p["reason"] for p in answer["problems"])
    assert "row 2, column 'description'" in answer["error"]

    broken_line = upload(b'{"item_id": "B1", "description": "ok"}\n{"item_id": "B2", \n', "application/x-ndjson")
    assert broken_line.status_code == 400 and broken_line.json()["problems"][0]["row"] == 2

    # Ids another batch of the project holds are refused, naming them (acme holds the first 30).
    taken = _rows(generated_sample, 0, 3).to_csv(index=False).encode()
    refused = upload(taken, project="acme")
    assert refused.status_code == 400 and refused.json()["problems"][0]["column"] == "item_id"
    assert _rows(generated_sample, 0, 1)["item_id"].iloc[0] in refused.json()["error"]

    assert upload(b"").status_code == 400  # empty file
    assert upload(b"item_id,description\nx,y\n", project="no such project!").status_code == 400
    assert upload(b"item_id,description\nx,y\n", project="bad.name").status_code == 400
    wrong_type = upload(b"item_id,description\nx,y\n", "application/json")
    assert wrong_type.status_code == 415 and "text/csv" in wrong_type.json()["error"]
    no_file = api.post("/api/projects/shop4/items", files={"other": ("a.csv", b"item_id,description\nx,y\n")})
    assert no_file.status_code == 400 and "'file'" in no_file.json()["error"]
    text_file = api.post("/api/projects/shop4/items", files={"file": ("a.txt", b"item_id,description\nx,y\n")})
    assert text_file.status_code == 400 and "unsupported file type" in text_file.json()["error"]
    assert api.get("/api/projects/shop4/review").status_code == 404  # nothing was stored
