"""The record of batches whose chunk keys were retired from Dagster's partition set.

Retirement (``defs/retention.py``) removes only *keys*: a batch's items, decisions, review
queue and Dagster's run and materialisation history all stay. This table says which batches were
retired and when, so the inbox sensor does not mistake a retired batch for one whose partitions
were never added, and an operator can tell why a batch's chunks are absent from the UI's list.

The table is part of the results schema (``results/schema.py``, migration 0003).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from matching_pipeline.core.models import STAGES
from matching_pipeline.results.faults import retry_safe
from matching_pipeline.results.schema import retired_batches, stage_chunks
from matching_pipeline.results.store import Batch, ResultsDatabase

KEYS_PER_QUERY = 5_000
"""Chunk keys bound in one ``IN (...)``: well under SQLite's limit on variables per statement."""


@retry_safe
def retired_batch_ids(db: ResultsDatabase) -> set[int]:
    with db.engine.connect() as conn:
        return set(conn.execute(sa.select(retired_batches.c.batch_id)).scalars())


@retry_safe
def record_retired(db: ResultsDatabase, batch_ids: Iterable[int], when: datetime | None = None) -> None:
    """Mark ``batch_ids`` retired at ``when`` (now); a batch retired again gets the new time."""
    ids = sorted(set(batch_ids))
    if not ids:
        return
    moment = when or datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(retired_batches.delete().where(retired_batches.c.batch_id.in_(ids)))
        conn.execute(retired_batches.insert(), [{"batch_id": i, "retired_at": moment} for i in ids])


@dataclass(frozen=True)
class BatchProgress:
    """How far every stage got with one batch, from ``stage_chunks``."""

    batch: Batch
    finished: dict[str, int]
    """``{stage: chunks finished}``"""
    last_decided_at: datetime | None

    @property
    def complete(self) -> bool:
        """Every stage of the cascade has finished every chunk of the batch."""
        return all(self.finished.get(stage, 0) >= self.batch.chunk_count for stage in STAGES)


@retry_safe
def batch_progress(db: ResultsDatabase, batches: Sequence[Batch]) -> list[BatchProgress]:
    """Per batch, the chunks each stage finished and when its last chunk was decided.

    Reads ``stage_chunks`` by primary key (stage, chunk key), a slice of keys at a time.
    """
    owner = {key: batch.id for batch in batches for key in batch.chunk_keys}
    keys = list(owner)
    counts: dict[int, dict[str, int]] = {batch.id: {} for batch in batches}
    latest: dict[int, datetime] = {}
    with db.engine.connect() as conn:
        for start in range(0, len(keys), KEYS_PER_QUERY):
            query = sa.select(stage_chunks.c.stage, stage_chunks.c.chunk_key, stage_chunks.c.decided_at).where(
                stage_chunks.c.stage.in_(list(STAGES)), stage_chunks.c.chunk_key.in_(keys[start : start + KEYS_PER_QUERY])
            )
            for stage, key, decided_at in conn.execute(query):
                batch_id = owner[key]
                counts[batch_id][stage] = counts[batch_id].get(stage, 0) + 1
                moment = decided_at if decided_at.tzinfo else decided_at.replace(tzinfo=UTC)
                if batch_id not in latest or moment > latest[batch_id]:
                    latest[batch_id] = moment
    return [BatchProgress(batch, counts[batch.id], latest.get(batch.id)) for batch in batches]
