"""The old front end's HTTP API over the Dagster instance (``matching-pipeline api``), on FastAPI.

Endpoints (JSON in, JSON out; ``{"success": true, ...}`` or ``{"success": false, "error": "..."}``;
the full contract, with every body and answer, is served as OpenAPI at ``/openapi.json`` and
browsable at ``/docs``):

- ``POST /api/projects/{project}/items``: upload a project's items (CSV, JSON Lines, or a
  multipart file); the same validation and batch semantics as the inbox. 201 with the batch (200
  when the same content was uploaded before: the same batch).
- ``POST /api/jobs/create`` ``{"projectId", "jobType": enhanced|ai|web-search|all, "batchId"?}``:
  submits the job's first-stage runs to the instance's run queue (the daemon launches them) and
  returns the job, pending. 201.
- ``GET /api/jobs/{id}``: the status view. ``GET /api/jobs?projectId=``: every job of a project.
- ``POST /api/jobs/{id}/process``: materialises the next chunks now, in this process, and returns
  the updated job with a ``message``.
- ``PATCH /api/jobs/{id}`` ``{"status": "canceled"|"failed", "reason"?}`` stops the job;
  ``{"status": "paused"}`` pauses it and ``{"status": "processing"}`` resumes it.
- ``POST /api/jobs/{id}/pause``, ``/resume``, ``/retry``: the same controls, and retry-failed.
- ``GET /api/projects/{project}/review?limit=&offset=``: the project's open review queue.
- ``POST /api/projects/{project}/review/{item_id}`` ``{"catalog_id": "<id>" | null}``: a person's
  final decision on an item (null: none of the candidates, the catalog lacks it).
- ``GET /healthz``: ``{"success": true, "status": "ok"}`` while the process serves HTTP (no token),
  for Kubernetes probes.

Bad input never answers 500: a body that is not JSON, not UTF-8, nested too deeply, of the wrong
type, with an unknown field (named) or a missing one answers 400 in the envelope above; a body over
``MATCHING_API_MAX_BODY_BYTES`` (default 10 MB, counted on the stream whatever Content-Length says)
answers 413. When ``MATCHING_API_TOKEN`` is set, every request except ``/healthz`` and the API
description (``/openapi.json``, ``/docs``) needs ``Authorization: Bearer <token>``: the description
holds no data, and a browser cannot send a bearer token when it opens ``/docs``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
import uvicorn
from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware import Middleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, StrictStr, field_validator
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from matching_pipeline.core.readers import SUPPORTED_SUFFIXES, InputError, Problem
from matching_pipeline.definitions import build_definitions
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.jobs import control
from matching_pipeline.jobs.notifications import notify_job_if_finished
from matching_pipeline.jobs.pools import PoolWaitTimeout
from matching_pipeline.jobs.runner import ensure_partitions
from matching_pipeline.jobs.status import JOB_TYPES, job_status, list_jobs
from matching_pipeline.results.faults import connection_fault
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.results.review_queue import UnknownItem, decide, review_payload
from matching_pipeline.results.store import Batch, ResultsDatabase
from matching_pipeline.settings import Settings, secret

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})
"""Paths served without the bearer token: the health probe and the API's own description."""

UPLOAD_TYPES = {"text/csv": ".csv", "application/x-ndjson": ".jsonl", "application/jsonl": ".jsonl"}
"""Content-Types of a raw item upload and the file suffix the shared reader knows them by."""

UPLOAD_FILE_FIELD = "file"
"""The multipart field that carries an uploaded item file."""

_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
"""Ids and names in paths and queries: no control characters (PostgreSQL refuses NUL in text, and
the refusal would surface as a 500 rather than as the client's mistake)."""
JobId = Annotated[str, PathParam(pattern=_PRINTABLE, max_length=500, description="the job's id")]
ProjectName = Annotated[str, PathParam(pattern=_PRINTABLE, max_length=200, description="the project")]
ItemId = Annotated[str, PathParam(pattern=_PRINTABLE, max_length=1000, description="the item's item_id")]


# -- request and response models -------------------------------------------------------------------


class _Body(BaseModel):
    """Request bodies refuse unknown fields: a misspelt or misplaced field silently ignored once
    created a job on an older batch than the client meant."""

    model_config = ConfigDict(extra="forbid")


JobType = Literal[tuple(JOB_TYPES)]  # type: ignore[valid-type]  # the job types status.py knows


class CreateJob(_Body):
    projectId: StrictStr = Field(min_length=1, max_length=200, pattern=_PRINTABLE, description="the project whose batch is matched")
    jobType: JobType = Field("all", description="which stages run")  # type: ignore[valid-type]
    batchId: StrictInt | None = Field(None, description="the batch to match; the project's latest when absent")


class PatchJob(_Body):
    status: Literal["canceled", "failed", "paused", "processing", "resumed"] = Field(
        description="canceled/failed stop the job, paused pauses it, processing (or resumed) resumes it"
    )
    reason: StrictStr | None = Field(None, max_length=2000, pattern=r"^[^\x00]*$", description="why it was stopped; shown as the job's error")


class ReviewDecision(_Body):
    catalog_id: StrictStr | None = Field(
        validation_alias=AliasChoices("catalog_id", "catalogId"),
        max_length=1000,
        pattern=_PRINTABLE,
        description="the right catalog id, or null: none of the candidates (the catalog lacks the item)",
    )

    @field_validator("catalog_id")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a non-empty string, or null for none of these")
        return value.strip() if value is not None else None


class _Answer(BaseModel):
    """Answers keep fields the models do not name, so the status view can grow without an API change."""

    model_config = ConfigDict(extra="allow")


class StageProgress(_Answer):
    stage: str
    totalChunks: int
    doneChunks: int
    processedItems: int
    matched: int
    failedItems: int


class JobView(_Answer):
    """The old ``MatchingJob`` row (``jobs/status.py``), plus what the Dagster UI shows."""

    id: str
    projectId: str | None
    jobType: str
    status: str
    currentStage: int
    currentStageName: str
    totalItems: int
    processedItems: int
    progressPercentage: float
    matchesFound: int
    matchRate: float
    startedAt: str | None
    completedAt: str | None
    estimatedCompletion: str | None
    error: str | None
    paused: bool | None = None
    batch: str | int | None = None
    stages: list[StageProgress] | None = None
    failedItems: int | None = None
    totalChunks: int | None = None
    runs: dict[str, int] | None = None


class JobAnswer(_Answer):
    success: Literal[True]
    job: JobView


class JobMessageAnswer(JobAnswer):
    message: str


class JobListAnswer(_Answer):
    success: Literal[True]
    jobs: list[JobView]


class ReviewItem(_Answer):
    itemId: str
    item: dict[str, Any]
    reason: str | None
    reasonStage: str | None
    decision: dict[str, Any]
    candidates: list[dict[str, Any]]


class ReviewListAnswer(_Answer):
    success: Literal[True]
    project: str
    total: int
    offset: int
    items: list[ReviewItem]


class HumanDecision(_Answer):
    itemId: str
    stage: str
    catalogId: str | None


class DecisionAnswer(_Answer):
    success: Literal[True]
    decision: HumanDecision
    openReviews: int


class BatchView(_Answer):
    id: int
    label: str
    project: str
    sourceName: str
    itemCount: int
    chunkCount: int
    firstChunk: str | None
    lastChunk: str | None
    isNew: bool = Field(description="false: the same content was stored before and this is that batch")
    createdAt: str


class UploadAnswer(_Answer):
    success: Literal[True]
    batch: BatchView
    message: str


class HealthAnswer(_Answer):
    success: Literal[True]
    status: Literal["ok"]


class ProblemView(BaseModel):
    row: int | None = Field(description="1-based data row (header excluded), when the problem is in one row")
    column: str | None
    reason: str


class ErrorAnswer(BaseModel):
    success: Literal[False]
    error: str
    problems: list[ProblemView] | None = Field(None, description="an upload's problems, each with its row and column")


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorAnswer, "description": "bad input: not JSON, a wrong or unknown field, a rejected file"},
    401: {"model": ErrorAnswer, "description": "missing or invalid bearer token (when MATCHING_API_TOKEN is set)"},
    413: {"model": ErrorAnswer, "description": "the body is over MATCHING_API_MAX_BODY_BYTES"},
    503: {"model": ErrorAnswer, "description": "the results database or Dagster's storage is unavailable, or a pool stays busy"},
}


# -- errors ----------------------------------------------------------------------------------------


class ApiError(StarletteHTTPException):
    """An answer in the error envelope. An HTTPException, so that FastAPI passes it through
    unchanged when it is raised while the body is read."""

    def __init__(self, status: int, message: str, *, problems: list[Problem] | None = None):
        super().__init__(status_code=status, detail=message)
        self.message = message
        self.problems = problems


def _error(status: int, message: str, *, problems: list[Problem] | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": message}
    if problems is not None:
        body["problems"] = [{"row": p.row, "column": p.column, "reason": p.reason} for p in problems]
    return JSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts)


def _describe(error: dict[str, Any]) -> str:
    """One validation error as a sentence that names the field; pydantic's wording otherwise."""
    name = _field_name(tuple(error.get("loc", ())))
    kind = error.get("type", "")
    if not name:
        if kind == "missing":
            return "request body is required (a JSON object)"
        if isinstance(error.get("input"), (bytes, bytearray)):
            return "request body must be JSON (Content-Type: application/json)"
        return "request body must be a JSON object"
    if kind == "missing":
        return f"{name} is required"
    if kind == "string_pattern_mismatch":  # the only patterns here refuse control characters
        return f"{name} must not contain control characters"
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{name} must be one of {expected}"
    return f"{name}: {error.get('msg', 'invalid')}"


def _body_fields(request: Request) -> list[str]:
    """The fields the matched route's body model accepts, to list beside an unknown one."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _parse_json(raw: bytes) -> Any:
    """The body as JSON, or an :class:`ApiError` that says what is wrong with it.

    FastAPI's own parsing answers a body that is not UTF-8, or nested deeper than the interpreter's
    recursion limit, with one vague "There was an error parsing the body"; this names the fault.
    Strict UTF-8, since ``json.loads`` on bytes would guess UTF-16/32 instead.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"request body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except ValueError as exc:  # e.g. an integer literal over Python's digit limit
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


class _JsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = _parse_json(await self.body())
        return self._json


class _Route(APIRoute):
    """Routes whose JSON bodies are parsed by :func:`_parse_json` (FastAPI's documented way to
    change how a request is read: a custom ``Request`` through a custom ``APIRoute``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_JsonRequest(request.scope, request.receive))

        return route_handler


# -- middleware ------------------------------------------------------------------------------------


class _BearerToken:
    """Refuses requests without the token before any body is read, so a stranger cannot make the
    API buffer and parse a body it will refuse anyway."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is not None and scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            scheme, _, given = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                response = _error(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes (MATCHING_API_MAX_BODY_BYTES)")


class _BodyLimit:
    """Caps the bytes read from a request body: a declared Content-Length over the limit is refused
    before reading, and the bytes actually received are counted too, since a chunked body declares
    no length and a declared length can lie."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _error(413, _BodyTooLarge(self.max_bytes).message)(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)  # answered by the HTTPException handler
            return message

        await self.app(scope, limited, send)


# -- the app ---------------------------------------------------------------------------------------


def create_app(
    instance: dg.DagsterInstance | None = None,
    *,
    settings: Settings | None = None,
    defs: dg.Definitions | None = None,
    token: str | None = None,
    submitter: control.Submitter | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The ASGI app. Defaults: ``DagsterInstance.get()``, settings and definitions from the env,
    the token from ``MATCHING_API_TOKEN`` (an empty string: no token) and the body limit from
    ``settings.api_max_body_bytes``."""
    settings = settings or Settings.from_env()
    instance = instance or dg.DagsterInstance.get()
    token = token if token is not None else secret("MATCHING_API_TOKEN")
    limit = settings.api_max_body_bytes if max_body_bytes is None else max_body_bytes
    if limit < 1:
        raise ValueError(f"MATCHING_API_MAX_BODY_BYTES must be at least 1, got {limit}")
    state: dict[str, Any] = {"defs": defs, "submitter": submitter}
    state_lock = threading.Lock()
    process_lock = threading.Lock()  # one in-process materialisation at a time per API process

    app = FastAPI(
        title="matching_pipeline jobs API",
        version="1",
        description=__doc__,
        redoc_url=None,
        strict_content_type=False,  # the old API read any body as JSON; clients that send none still work
        responses=_ERROR_RESPONSES,
        middleware=[Middleware(_BearerToken, token=token or None), Middleware(_BodyLimit, max_bytes=limit)],
    )
    app.router.route_class = _Route

    def get_defs() -> dg.Definitions:
        with state_lock:
            if state["defs"] is None:
                state["defs"] = build_definitions(settings)
            return state["defs"]

    def get_submitter() -> control.Submitter:
        with state_lock:
            if state["submitter"] is None:
                state["submitter"] = control.Submitter(instance)
            return state["submitter"]

    def results() -> ResultsDatabase:
        return open_results_database(settings.database_url)

    def view(job_id: str) -> dict[str, Any]:
        result = job_status(instance, job_id)
        if result is None:
            raise ApiError(404, f"job {job_id!r} not found")
        return result

    def results_of(project: str) -> ResultsDatabase:
        db = results()
        if not db.list_batches(project):
            raise ApiError(404, f"project {project!r} has no items")
        return db

    # -- exception handlers: every error in the {"success": false, "error": ...} envelope --------

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, ApiError):
            return _error(exc.status_code, exc.message, problems=exc.problems, headers=exc.headers)
        if exc.status_code == 404:
            message = f"no endpoint {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        unknown = [_field_name(tuple(e.get("loc", ()))) for e in errors if e.get("type") == "extra_forbidden"]
        messages = [_describe(e) for e in errors if e.get("type") != "extra_forbidden"]
        if unknown:
            allowed = _body_fields(request)
            names = ", ".join(repr(name) for name in unknown)
            messages.append(f"unknown field{'s' if len(unknown) > 1 else ''} {names}" + (f" (allowed: {', '.join(allowed)})" if allowed else ""))
        return _error(400, "; ".join(dict.fromkeys(messages)) or "invalid request")

    @app.exception_handler(control.UnknownJob)
    async def unknown_job(request: Request, exc: control.UnknownJob) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(control.ControlError)
    async def refused(request: Request, exc: control.ControlError) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(PoolWaitTimeout)
    async def pool_busy(request: Request, exc: PoolWaitTimeout) -> JSONResponse:
        return _error(503, str(exc))  # another run holds the pool for longer than we wait

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        cause = connection_fault(exc)
        if cause is not None:
            return _error(503, f"database unavailable: {cause}")
        # A bug, not bad input: the traceback goes to the server log (Starlette re-raises after
        # this answer), the client gets no internals.
        return _error(500, f"internal error ({type(exc).__name__}); see the API server's log")

    # -- endpoints ---------------------------------------------------------------------------------

    @app.get("/healthz", response_model=HealthAnswer, tags=["health"], openapi_extra={"security": []})
    def healthz() -> dict[str, Any]:
        """Liveness and readiness: the process serves HTTP. No token, no database query, so a
        database outage (answered 503 per request) does not make Kubernetes restart the API."""
        return {"success": True, "status": "ok"}

    @app.post(
        "/api/projects/{project}/items",
        status_code=201,
        response_model=UploadAnswer,
        response_model_exclude_unset=True,
        tags=["items"],
        responses={200: {"model": UploadAnswer, "description": "the same content was uploaded before: that batch"}, 415: {"model": ErrorAnswer}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {UPLOAD_FILE_FIELD: {"type": "string", "format": "binary"}},
                            "required": [UPLOAD_FILE_FIELD],
                        }
                    },
                },
            }
        },
    )
    async def upload_items(
        project: ProjectName,
        request: Request,
        response: Response,
        filename: Annotated[str | None, Query(max_length=200, pattern=_PRINTABLE, description="name recorded for the batch (raw bodies)")] = None,
    ) -> dict[str, Any]:
        """Store a file of the project's items as a batch, exactly as the inbox would.

        The body is a CSV (``text/csv``) or JSON Lines (``application/x-ndjson``) file, or a
        multipart form whose ``file`` field holds a ``.csv``, ``.jsonl``, ``.ndjson`` or ``.parquet``
        file. Validation, field limits, column mapping and encoding are the inbox's
        (``results/ingest.py``): a rejected file answers 400 with every problem's row and column;
        ids already taken by another batch of the project are refused; the same content again
        answers 200 with the batch it already is. The batch's chunks are added as partitions, so
        ``POST /api/jobs/create`` (or a backfill in the UI) can follow at once.
        """
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        with tempfile.TemporaryDirectory(prefix="matching-upload-") as folder:
            if media == "multipart/form-data":
                path = await _receive_multipart(request, Path(folder))
            elif media in UPLOAD_TYPES:
                path = Path(folder) / _upload_name(filename, UPLOAD_TYPES[media])
                with path.open("wb") as out:
                    async for piece in request.stream():
                        out.write(piece)
            else:
                accepted = f"{', '.join(UPLOAD_TYPES)} or multipart/form-data (field {UPLOAD_FILE_FIELD!r})"
                raise ApiError(415, f"send the items as {accepted}, not {media or 'no Content-Type'}")
            batch = await run_in_threadpool(store_upload, project, path)
        response.status_code = 201 if batch.is_new else 200
        keys = batch.chunk_keys
        said = "stored" if batch.is_new else "already stored (same content): the existing batch"
        return {
            "success": True,
            "batch": {
                "id": batch.id,
                "label": batch.label,
                "project": batch.project,
                "sourceName": batch.source_name,
                "itemCount": batch.item_count,
                "chunkCount": batch.chunk_count,
                "firstChunk": keys[0] if keys else None,
                "lastChunk": keys[-1] if keys else None,
                "isNew": batch.is_new,
                "createdAt": batch.created_at.isoformat(),
            },
            "message": f"{said} {batch.label}: {batch.item_count} items in {batch.chunk_count} chunks",
        }

    def store_upload(project: str, path: Path) -> Batch:
        try:
            batch = ingest_file(
                results(), path, project, read=settings.item_read_options
            )
        except InputError as exc:
            # Described by the client's file name, never the temporary path on this server.
            listed = "; ".join(p.describe(Path(path.name)) for p in exc.problems[:20])
            more = f"; ... and {len(exc.problems) - 20} more problems" if len(exc.problems) > 20 else ""
            raise ApiError(400, f"{path.name}: rejected: {listed}{more}", problems=exc.problems) from None
        ensure_partitions(instance, batch.chunk_keys)
        return batch

    @app.post("/api/jobs/create", status_code=201, response_model=JobAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def create(body: CreateJob) -> dict[str, Any]:
        """Submit the job's first-stage runs to the run queue; the daemon launches them."""
        batch = control.find_batch(results(), body.projectId, body.batchId)
        if batch is None:
            which = "" if body.batchId is None else f" {body.batchId}"
            raise ApiError(404, f"project {body.projectId!r} has no batch{which} of items")
        job_id = control.create_job(instance, batch, body.jobType, submitter=get_submitter())
        return {"success": True, "job": view(job_id)}

    @app.get("/api/jobs", response_model=JobListAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def list_all(
        projectId: Annotated[str | None, Query(pattern=_PRINTABLE, max_length=200, description="only this project's jobs")] = None,
    ) -> dict[str, Any]:
        return {"success": True, "jobs": list_jobs(instance, projectId or None)}

    @app.get("/api/jobs/{job_id}", response_model=JobAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def get_job(job_id: JobId) -> dict[str, Any]:
        return {"success": True, "job": view(job_id)}

    @app.post("/api/jobs/{job_id}/process", response_model=JobMessageAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def process(job_id: JobId) -> dict[str, Any]:
        """Materialise the job's next chunks now, in this process (one run's worth)."""
        view(job_id)
        with process_lock:
            _, message = control.process_next(instance, job_id, get_defs())
        notify_job_if_finished(instance, job_id)
        return {"success": True, "job": view(job_id), "message": message}

    def apply(job_id: str, wanted: str, reason: str | None) -> dict[str, Any]:
        if wanted in ("canceled", "failed"):
            control.cancel_job(instance, job_id, status=wanted, reason=reason)
            message = f"job {wanted}"
        elif wanted == "paused":
            control.pause_job(instance, job_id)
            message = "job paused: no new chunks start; chunks in flight finish"
        else:  # processing, resumed
            launched = control.resume_job(instance, job_id, submitter=get_submitter())
            message = f"job resumed: {len(launched.runs)} run(s) submitted"
        return {"success": True, "job": view(job_id), "message": message}

    @app.patch("/api/jobs/{job_id}", response_model=JobMessageAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def patch(job_id: JobId, body: PatchJob) -> dict[str, Any]:
        return apply(job_id, body.status, body.reason)

    @app.post("/api/jobs/{job_id}/pause", response_model=JobMessageAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def pause(job_id: JobId) -> dict[str, Any]:
        return apply(job_id, "paused", None)

    @app.post("/api/jobs/{job_id}/resume", response_model=JobMessageAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def resume(job_id: JobId) -> dict[str, Any]:
        return apply(job_id, "processing", None)

    @app.post("/api/jobs/{job_id}/retry", response_model=JobMessageAnswer, response_model_exclude_unset=True, tags=["jobs"])
    def retry(job_id: JobId) -> dict[str, Any]:
        launched = control.retry_failed(instance, job_id, submitter=get_submitter())
        message = f"retrying failed chunks and items: {len(launched.runs)} run(s) submitted"
        return {"success": True, "job": view(job_id), "message": message}

    @app.get("/api/projects/{project}/review", response_model=ReviewListAnswer, response_model_exclude_unset=True, tags=["review"])
    def review_list(
        project: ProjectName,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """The project's open review queue: doubtful items with the reason, decision and candidates."""
        db = results_of(project)
        items = [review_payload(r) for r in db.open_reviews(project, offset=offset, limit=limit)]
        return {"success": True, "project": project, "total": db.open_review_count(project), "offset": offset, "items": items}

    @app.post("/api/projects/{project}/review/{item_id:path}", response_model=DecisionAnswer, response_model_exclude_unset=True, tags=["review"])
    def review_decide(project: ProjectName, item_id: ItemId, body: ReviewDecision) -> dict[str, Any]:
        """A person's decision on an item. Final: it wins over every stage and no re-run replaces it."""
        db = results_of(project)
        catalog = (get_defs().resources or {})["catalog_source"]
        try:
            decided = decide(db, project, item_id, body.catalog_id, catalog.catalog_ids, source="api")
        except UnknownItem as exc:
            raise ApiError(404, str(exc)) from None
        except (InputError, FileNotFoundError) as exc:  # the catalog itself cannot be read
            raise ApiError(503, f"the catalog cannot be read to check the id: {exc}") from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {"success": True, "decision": decided, "openReviews": db.open_review_count(project)}

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, told the truth: validation errors answer 400 (in the envelope), not
        422, and every operation but the public ones takes the bearer token."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "MATCHING_API_TOKEN, when the server sets it",
            }
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
                    if path not in PUBLIC_PATHS:
                        operation["security"] = [{"bearer": []}]
            schemas = schema["components"].get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
    return app


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _upload_name(given: str | None, suffix: str) -> str:
    """A safe file name for an upload: the client's base name (path parts and odd characters
    dropped), with the suffix its Content-Type says, so the shared reader parses it right."""
    stem = _SAFE_NAME.sub("_", Path(given or "upload").stem).strip("._") or "upload"
    return stem[:120] + suffix


async def _receive_multipart(request: Request, folder: Path) -> Path:
    """The multipart body's ``file`` field, written to ``folder``."""
    form = await request.form(max_files=1, max_fields=10)
    try:
        upload = form.get(UPLOAD_FILE_FIELD)
        if not isinstance(upload, UploadFile):
            raise ApiError(400, f"the multipart body needs a file field named {UPLOAD_FILE_FIELD!r}")
        suffix = Path(upload.filename or "").suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise ApiError(400, f"{upload.filename or 'the file'}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
        path = folder / _upload_name(upload.filename, suffix)
        with path.open("wb") as out:
            await run_in_threadpool(shutil.copyfileobj, upload.file, out)
        return path
    finally:
        await form.close()


def serve(host: str, port: int) -> None:
    uvicorn.run(create_app(), host=host, port=port, log_level="info")
