"""Helpers the job-level tests share: ingesting a generated sample, breaking and restoring a
chunk, reading results, holding a stage mid-job, waiting for a condition, serving an ASGI app
over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import uvicorn

from matching_pipeline.defs import stages as stages_module
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.jobs.runner import ensure_partitions
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.settings import Settings


def ingest_items(settings: Settings, instance: dg.DagsterInstance, sample: dict[str, Path], n: int, project: str = "acme"):
    frame = pd.read_csv(sample["items"], dtype=str, keep_default_na=False).head(n)
    path = settings.data_dir / f"{project}-{n}.csv"
    frame.to_csv(path, index=False)
    batch = ingest_file(open_results_database(settings.database_url), path, project)
    ensure_partitions(instance, batch.chunk_keys)
    return batch


class Gate:
    """Holds a stage before it decides anything, so a test can look at a job mid-flight."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: str):
        self.entered = threading.Event()
        self.release = threading.Event()
        original = stages_module.pending_items

        def gated(db, which, keys, frame, **options):
            if which == stage:
                self.entered.set()
                assert self.release.wait(60), "gate never released"
            return original(db, which, keys, frame, **options)

        monkeypatch.setattr(stages_module, "pending_items", gated)


def break_chunk(settings: Settings, key: str) -> list[dict]:
    """Remove a chunk's items so that a run fails when it reaches that chunk; returns them."""
    db = open_results_database(settings.database_url)
    with db.engine.begin() as conn:
        saved = [dict(r) for r in conn.execute(sa.text("SELECT * FROM items WHERE chunk_key = :k"), {"k": key}).mappings()]
        conn.execute(sa.text("DELETE FROM items WHERE chunk_key = :k"), {"k": key})
    return saved


def restore_chunk(settings: Settings, saved: list[dict]) -> None:
    db = open_results_database(settings.database_url)
    with db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO items VALUES (:project, :item_id, :batch_id, :chunk_key, :position, :description, "
                ":part_number, :manufacturer, :gtin, :extra)"
            ),
            [r | {"extra": r["extra"] if isinstance(r["extra"], str) else "{}"} for r in saved],
        )


def result_rows(settings: Settings) -> pd.DataFrame:
    db = open_results_database(settings.database_url)
    with db.engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT item_id, stage, chunk_key, catalog_id, error, decided_at FROM match_results"), conn)


def wait_for(predicate, timeout: float = 60, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def free_port() -> int:
    """A TCP port of 127.0.0.1 free at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve_app(app: Any, *, token: str | None = None, timeout: float = 60) -> Iterator[httpx.Client]:
    """``app`` (ASGI) under uvicorn in a thread on a free port of 127.0.0.1, and an httpx client
    for it that sends ``token`` as the bearer token; the server stops when the block ends."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=timeout) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)
