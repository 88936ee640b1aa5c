"""The old front end's HTTP API over the Dagster instance (``matching-pipeline api``).

Endpoints (JSON in, JSON out; ``{"success": true, "job": {...}}`` or ``{"success": false, "error": "..."}``):

- ``POST /api/jobs/create`` ``{"projectId", "jobType": enhanced|ai|web-search|all, "batchId"?}``:
  submits the job's first-stage runs to the instance's run queue (the daemon launches them) and
  returns the job, pending. 201.
- ``GET /api/jobs/{id}``: the status view. ``GET /api/jobs?projectId=``: every job of a project.
- ``POST /api/jobs/{id}/process``: materialises the next chunks now, in this process, and returns
  the updated job with a ``message``.
- ``PATCH /api/jobs/{id}`` ``{"status": "canceled"|"failed", "reason"?}`` stops the job;
  ``{"status": "paused"}`` pauses it and ``{"status": "processing"}`` resumes it.
- ``POST /api/jobs/{id}/pause``, ``/resume``, ``/retry``: the same controls, and retry-failed.
- ``GET /api/projects/{project}/review?limit=&offset=``: the project's open review queue (items
  whose decision is doubtful, with the reason, the current decision and the candidates).
- ``POST /api/projects/{project}/review/{item_id}`` ``{"catalog_id": "<id>" | null}``: a person's
  decision on an item (null: none of the candidates, the catalog lacks it). It is final: it wins
  over every stage and no re-run replaces it.

When ``MATCHING_API_TOKEN`` is set every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import dagster as dg
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from matching_pipeline.jobs import control
from matching_pipeline.core.readers import InputError
from matching_pipeline.results.faults import connection_fault
from matching_pipeline.jobs.pools import PoolWaitTimeout
from matching_pipeline.results.review_queue import UnknownItem, decide, review_payload
from matching_pipeline.settings import Settings
from matching_pipeline.jobs.status import JOB_TYPES, job_status, list_jobs


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"success": False, "error": message}, status_code=status)


def create_app(
    instance: dg.DagsterInstance | None = None,
    *,
    settings: Settings | None = None,
    defs: dg.Definitions | None = None,
    token: str | None = None,
    submitter: control.Submitter | None = None,
) -> Starlette:
    """The ASGI app. Defaults: ``DagsterInstance.get()``, settings and definitions from the env."""
    settings = settings or Settings.from_env()
    instance = instance or dg.DagsterInstance.get()
    token = token if token is not None else os.environ.get("MATCHING_API_TOKEN") or None
    state: dict[str, Any] = {"defs": defs, "submitter": submitter}
    process_lock = threading.Lock()  # one in-process materialisation at a time per API process

    def get_defs() -> dg.Definitions:
        if state["defs"] is None:
            from matching_pipeline.definitions import build_definitions

            state["defs"] = build_definitions(settings)
        return state["defs"]

    def get_submitter() -> control.Submitter:
        if state["submitter"] is None:
            state["submitter"] = control.Submitter(instance)
        return state["submitter"]

    def view(job_id: str) -> dict[str, Any]:
        result = job_status(instance, job_id)
        if result is None:
            raise ApiError(404, f"job {job_id!r} not found")
        return result

    def endpoint(handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> JSONResponse:
            if token:
                header = request.headers.get("authorization", "")
                scheme, _, given = header.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
                    return _error(401, "missing or invalid bearer token")
            body: dict[str, Any] = {}
            if request.method in ("POST", "PATCH"):
                raw = await request.body()
                if raw.strip():
                    try:
                        body = json.loads(raw)
                    except ValueError:
                        return _error(400, "request body is not valid JSON")
                    if not isinstance(body, dict):
                        return _error(400, "request body must be a JSON object")
            try:
                status, payload = await run_in_threadpool(handler, request, body)
            except ApiError as exc:
                return _error(exc.status, exc.message)
            except control.UnknownJob as exc:
                return _error(404, str(exc))
            except control.ControlError as exc:
                return _error(409, str(exc))
            except PoolWaitTimeout as exc:  # another run holds the pool for longer than we wait
                return _error(503, str(exc))
            except Exception as exc:
                cause = connection_fault(exc)
                if cause is None:
                    raise
                return _error(503, f"database unavailable: {cause}")
            return JSONResponse({"success": True, **payload}, status_code=status)

        return wrapped

    def create(request: Request, body: dict[str, Any]):
        project = body.get("projectId")
        job_type = body.get("jobType", "all")
        if not isinstance(project, str) or not project:
            raise ApiError(400, "projectId is required (a string)")
        if job_type not in JOB_TYPES:
            raise ApiError(400, f"jobType must be one of {', '.join(JOB_TYPES)}")
        batch_id = body.get("batchId")
        if batch_id is not None and not isinstance(batch_id, int):
            raise ApiError(400, "batchId must be an integer")
        from matching_pipeline.defs.resources import open_results_database

        batch = control.find_batch(open_results_database(settings.database_url), project, batch_id)
        if batch is None:
            raise ApiError(404, f"project {project!r} has no batch{'' if batch_id is None else f' {batch_id}'} of items")
        job_id = control.create_job(instance, batch, job_type, submitter=get_submitter())
        return 201, {"job": view(job_id)}

    def get_job(request: Request, body: dict[str, Any]):
        return 200, {"job": view(request.path_params["job_id"])}

    def list_all(request: Request, body: dict[str, Any]):
        return 200, {"jobs": list_jobs(instance, request.query_params.get("projectId") or None)}

    def process(request: Request, body: dict[str, Any]):
        job_id = request.path_params["job_id"]
        view(job_id)
        with process_lock:
            _, message = control.process_next(instance, job_id, get_defs())
        from matching_pipeline.jobs.notifications import notify_job_if_finished

        notify_job_if_finished(instance, job_id)
        return 200, {"job": view(job_id), "message": message}

    def patch(request: Request, body: dict[str, Any]):
        job_id = request.path_params["job_id"]
        wanted = body.get("status")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError(400, "reason must be a string")
        if wanted in ("canceled", "failed"):
            control.cancel_job(instance, job_id, status=wanted, reason=reason)
            message = f"job {wanted}"
        elif wanted == "paused":
            control.pause_job(instance, job_id)
            message = "job paused: no new chunks start; chunks in flight finish"
        elif wanted in ("processing", "resumed"):
            launched = control.resume_job(instance, job_id, submitter=get_submitter())
            message = f"job resumed: {len(launched.runs)} run(s) submitted"
        else:
            raise ApiError(400, "status must be one of canceled, failed, paused, processing")
        return 200, {"job": view(job_id), "message": message}

    def pause(request: Request, body: dict[str, Any]):
        return patch(request, {"status": "paused"})

    def resume(request: Request, body: dict[str, Any]):
        return patch(request, {"status": "processing"})

    def retry(request: Request, body: dict[str, Any]):
        job_id = request.path_params["job_id"]
        launched = control.retry_failed(instance, job_id, submitter=get_submitter())
        return 200, {"job": view(job_id), "message": f"retrying failed chunks and items: {len(launched.runs)} run(s) submitted"}

    def results_of(project: str):
        from matching_pipeline.defs.resources import open_results_database

        db = open_results_database(settings.database_url)
        if not db.list_batches(project):
            raise ApiError(404, f"project {project!r} has no items")
        return db

    def review_list(request: Request, body: dict[str, Any]):
        project = request.path_params["project"]
        limit = _int_param(request, "limit", default=100, low=1, high=1000)
        offset = _int_param(request, "offset", default=0, low=0, high=None)
        db = results_of(project)
        items = [review_payload(r) for r in db.open_reviews(project, offset=offset, limit=limit)]
        return 200, {"project": project, "total": db.open_review_count(project), "offset": offset, "items": items}

    def review_decide(request: Request, body: dict[str, Any]):
        project, item_id = request.path_params["project"], request.path_params["item_id"]
        key = next((k for k in ("catalog_id", "catalogId") if k in body), None)
        if key is None:
            raise ApiError(400, 'body must be {"catalog_id": "<catalog id>"} or {"catalog_id": null} for none of these')
        catalog_id = body[key]
        if catalog_id is not None and (not isinstance(catalog_id, str) or not catalog_id.strip()):
            raise ApiError(400, "catalog_id must be a non-empty string, or null for none of these")
        db = results_of(project)
        catalog = get_defs().resources["catalog_source"]
        try:
            decided = decide(db, project, item_id, catalog_id and catalog_id.strip(), catalog.catalog_ids, source="api")
        except UnknownItem as exc:
            raise ApiError(404, str(exc)) from None
        except (InputError, FileNotFoundError) as exc:  # the catalog itself cannot be read
            raise ApiError(503, f"the catalog cannot be read to check the id: {exc}") from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return 200, {"decision": decided, "openReviews": db.open_review_count(project)}

    routes = [
        Route("/api/jobs/create", endpoint(create), methods=["POST"]),
        Route("/api/jobs", endpoint(list_all), methods=["GET"]),
        Route("/api/jobs/{job_id}", endpoint(get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}", endpoint(patch), methods=["PATCH"]),
        Route("/api/jobs/{job_id}/process", endpoint(process), methods=["POST"]),
        Route("/api/jobs/{job_id}/pause", endpoint(pause), methods=["POST"]),
        Route("/api/jobs/{job_id}/resume", endpoint(resume), methods=["POST"]),
        Route("/api/jobs/{job_id}/retry", endpoint(retry), methods=["POST"]),
        Route("/api/projects/{project}/review", endpoint(review_list), methods=["GET"]),
        Route("/api/projects/{project}/review/{item_id:path}", endpoint(review_decide), methods=["POST"]),
    ]

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return _error(404, f"no endpoint {request.method} {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return _error(405, f"method {request.method} not allowed on {request.url.path}")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


def _int_param(request: Request, name: str, *, default: int, low: int, high: int | None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise ApiError(400, f"{name} must be between {low} and {high}" if high is not None else f"{name} must be at least {low}")
    return value


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="info")
