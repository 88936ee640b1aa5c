"""Which chunks a stage still owes, judged by the results database (the stages' own record).

A chunk is *up to date* for a stage when the stage finished it (a ``stage_chunks`` row) no earlier
than the stage before it last finished it. A stage's result built on an older decision of the
previous stage is stale: the previous stage was re-run (from the UI, a retry, a catalog re-run),
so the chunk must go through this stage again. The cascade sensor launches a stage only for
chunks that are not up to date, so a stage is never run twice over the same upstream decisions,
whoever else (``/process``, the CLI, another sensor tick) ran it in the meantime.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa

from matching_pipeline.results.schema import stage_chunks
from matching_pipeline.results.store import ResultsDatabase


def finished_at(db: ResultsDatabase, stage: str, keys: Sequence[str]) -> dict[str, datetime]:
    """``{chunk: when the stage last finished it}`` for the chunks of ``keys`` it has finished."""
    found: dict[str, datetime] = {}
    keys = list(keys)
    with db.engine.connect() as conn:
        for start in range(0, len(keys), 500):
            rows = conn.execute(
                sa.select(stage_chunks.c.chunk_key, stage_chunks.c.decided_at).where(
                    stage_chunks.c.stage == stage, stage_chunks.c.chunk_key.in_(keys[start : start + 500])
                )
            )
            found.update({key: _naive(at) for key, at in rows})
    return found


def owed_chunks(db: ResultsDatabase, stage: str, upstream: str | None, keys: Sequence[str]) -> list[str]:
    """The chunks of ``keys`` (in order) that ``stage`` has not finished since ``upstream`` last did."""
    mine = finished_at(db, stage, keys)
    before = finished_at(db, upstream, keys) if upstream else {}
    return [k for k in keys if k not in mine or (k in before and mine[k] < before[k])]


def _naive(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes, Postgres aware ones: compare them the same way."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)
