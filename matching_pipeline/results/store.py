"""The results database: items, arrival batches, per-stage decisions and the caches.

One schema (``schema.py``, brought up to date by ``migrate.py`` when a database is opened) serves
SQLite (the default file) and Postgres (``MATCHING_DATABASE_URL``) through SQLAlchemy Core.
Dagster's own storage is the record of *progress*; this database is the record of *answers*,
queryable by SQL (see the ``final_matches`` view).

Writes that the pipeline repeats are idempotent by construction: a chunk's decisions for a stage
are replaced in one transaction, and a batch is keyed by its content hash so that the same file
dropped twice maps to the batch that already exists.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from matching_pipeline.core.models import HUMAN_STAGE, ITEM_FIELDS, RESULT_STAGES, STAGES, Candidate, Decision
from matching_pipeline.core.review import ReviewSettings, review_reason
from matching_pipeline.results.faults import retry_safe
from matching_pipeline.results.migrate import upgrade_schema
from matching_pipeline.results.schema import batches, cache, items, match_results, review_reasons, stage_chunks

CHUNK_SIZE = 10
"""Items per chunk partition. Fixed: chunks are never re-cut once they exist."""
KEYS_PER_STATEMENT = 5000
"""Chunk keys bound in one statement: SQLite limits the variables per statement."""

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")

_DEFAULT_REVIEW = ReviewSettings()
"""The review thresholds when a caller names none (frozen, so one instance serves every call)."""


def chunk_key(batch_id: int, project: str, chunk_index: int) -> str:
    """``b000012:acme:00003``: sorts in arrival order, names project and batch, no commas."""
    return f"b{batch_id:06d}:{project}:{chunk_index:05d}"


def parse_chunk_key(key: str) -> tuple[int, str, int]:
    batch, project, index = key.split(":")
    return int(batch[1:]), project, int(index)


@dataclass(frozen=True)
class Batch:
    id: int
    project: str
    source_name: str
    content_sha256: str
    item_count: int
    chunk_count: int
    created_at: datetime
    is_new: bool = False

    @property
    def chunk_keys(self) -> list[str]:
        return [chunk_key(self.id, self.project, i) for i in range(1, self.chunk_count + 1)]

    @property
    def label(self) -> str:
        return f"b{self.id:06d}"


def _now() -> datetime:
    return datetime.now(UTC)


def _jsonable(value: Any) -> Any:
    """NaN (and numpy scalars holding it) as null: JSON columns reject NaN on Postgres."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy and pandas scalars
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dump_json(value: Any) -> str:
    """The JSON columns' serialiser. Values are almost always plain already, so they are dumped
    directly; only a value holding NaN takes the slower walk that turns it into null."""
    try:
        return json.dumps(value, allow_nan=False, default=_plain)
    except (ValueError, TypeError):  # NaN, or numpy keys
        return json.dumps(_jsonable(value), allow_nan=False, default=_plain)


class ResultsDatabase:
    """Typed access to the results database. Safe to share across threads."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("postgresql://"):
            # dagster-postgres and this store share psycopg2; be explicit so SQLAlchemy never
            # picks another driver.
            url = "postgresql+psycopg2://" + url[len("postgresql://") :]
        # pool_pre_ping: a connection the server dropped (restart, failover) is replaced at checkout
        # instead of failing the next statement; see faults.py for the retries around it.
        kwargs: dict[str, Any] = {"future": True, "json_serializer": _dump_json, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 60}
        self.engine = sa.create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            if self.engine.url.database not in (None, "", ":memory:"):
                Path(self.engine.url.database).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        # Every process opening the database brings it to this code's schema (results/migrate.py).
        upgrade_schema(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- batches and items -------------------------------------------------------------------

    @retry_safe
    def find_batch(self, project: str, content_sha256: str) -> Batch | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(batches).where(batches.c.project == project, batches.c.content_sha256 == content_sha256)
            ).first()
        return _batch(row) if row else None

    @retry_safe
    def get_batch(self, batch_id: int) -> Batch | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
        return _batch(row) if row else None

    @retry_safe
    def list_batches(self, project: str | None = None) -> list[Batch]:
        query = sa.select(batches).order_by(batches.c.id)
        if project:
            query = query.where(batches.c.project == project)
        with self.engine.connect() as conn:
            return [_batch(row) for row in conn.execute(query)]

    def add_batch(self, project: str, source_name: str, content_sha256: str, frame: pd.DataFrame) -> Batch:
        """Store ``frame`` as a new arrival batch and cut it into chunks, in one transaction.

        Returns the existing batch (``is_new=False``) when the same content arrived before.
        Raises ``ValueError`` naming the rows whose ``item_id`` an earlier batch of the project
        already holds, since ids are unique within a project and an answer must not be overwritten
        by accident.
        """
        if not PROJECT_NAME.match(project):
            raise ValueError(f"project name {project!r} must be letters, digits, '-' or '_' (max 64)")
        existing = self.find_batch(project, content_sha256)
        if existing:
            return existing
        chunk_count = math.ceil(len(frame) / CHUNK_SIZE)
        try:
            with self.engine.begin() as conn:
                batch_id = conn.execute(
                    batches.insert().values(
                        project=project,
                        source_name=source_name,
                        content_sha256=content_sha256,
                        item_count=len(frame),
                        chunk_count=chunk_count,
                        created_at=_now(),
                    )
                ).inserted_primary_key[0]  # type: ignore[index]  # an insert with an autoincrement key always has one
                extra_columns = [c for c in frame.columns if c not in ITEM_FIELDS]
                fields = [name for name in ITEM_FIELDS if name in frame.columns]
                rows = [
                    {
                        "project": project,
                        "batch_id": batch_id,
                        "chunk_key": chunk_key(batch_id, project, position // CHUNK_SIZE + 1),
                        "position": position,
                        **{name: record[name] for name in fields},
                        "extra": {c: record[c] for c in extra_columns},
                    }
                    for position, record in enumerate(frame.to_dict("records"))
                ]
                conn.execute(items.insert(), rows)
        except sa.exc.IntegrityError:
            # The items' primary key (project, item_id) is the uniqueness check, so a fresh batch
            # costs no lookup; only a refusal looks up which rows clash, to name them. Another
            # process storing the same file at the same moment is not a clash.
            if existing := self.find_batch(project, content_sha256):
                return existing
            raise self._taken_ids_error(project, frame["item_id"].tolist()) from None
        batch = self.get_batch(batch_id)
        assert batch is not None
        return Batch(**{**batch.__dict__, "is_new": True})

    @retry_safe
    def load_chunk_items(self, chunk_keys: Sequence[str]) -> pd.DataFrame:
        """Items of the given chunks, in arrival order, with their extra columns expanded."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(items).where(items.c.chunk_key.in_(list(chunk_keys))).order_by(items.c.batch_id, items.c.position)
            ).mappings().all()
        # object dtype keeps missing values as None, as read_table produces them
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in items.columns], dtype=object)

    # -- decisions ---------------------------------------------------------------------------

    @retry_safe
    def replace_results(
        self,
        stage: str,
        chunks: Mapping[str, Sequence[Decision]],
        catalog_version: str | None,
        review: ReviewSettings = _DEFAULT_REVIEW,
    ) -> dict[str, int]:
        """Replace what ``stage`` decided for each chunk, and why any of it needs review, all in
        one transaction. Returns how many of each chunk's decisions gave a review reason.

        Re-materialising a chunk therefore never duplicates, and a chunk is either wholly written
        or not at all. Only rows of ``stage`` are touched: a person's decisions (``human``) are
        written by :meth:`record_human_decisions` alone, so no stage run can replace them.
        """
        if stage not in STAGES:
            raise ValueError(f"stage {stage!r} is not a stage of the cascade ({', '.join(STAGES)})")
        if not chunks:
            return {}
        now = _now()
        reasons: list[dict[str, Any]] = [
            {
                "project": parse_chunk_key(chunk)[1],
                "item_id": d.item_id,
                "stage": stage,
                "chunk_key": chunk,
                "reason": reason,
                "created_at": now,
            }
            for chunk, decisions in chunks.items()
            for d in decisions
            if (reason := review_reason(stage, d, review)) is not None
        ]
        rows = [
            {
                "project": parse_chunk_key(chunk)[1],
                "item_id": d.item_id,
                "stage": stage,
                "chunk_key": chunk,
                "catalog_id": d.catalog_id,
                "method": d.method,
                "confidence": float(max(0.0, min(1.0, d.confidence))),
                "evidence": d.evidence,
                "candidates": [c.to_dict() for c in d.candidates],
                "error": d.error,
                "catalog_version": catalog_version,
                "decided_at": now,
            }
            for chunk, decisions in chunks.items()
            for d in decisions
        ]
        finished = [
            {
                "stage": stage,
                "chunk_key": chunk,
                "decided": len(decisions),
                "matched": sum(d.matched for d in decisions),
                "catalog_version": catalog_version,
                "decided_at": now,
            }
            for chunk, decisions in chunks.items()
        ]
        keys = list(chunks)
        with self.engine.begin() as conn:
            conn.execute(match_results.delete().where(match_results.c.stage == stage, match_results.c.chunk_key.in_(keys)))
            conn.execute(stage_chunks.delete().where(stage_chunks.c.stage == stage, stage_chunks.c.chunk_key.in_(keys)))
            conn.execute(review_reasons.delete().where(review_reasons.c.stage == stage, review_reasons.c.chunk_key.in_(keys)))
            if rows:
                conn.execute(match_results.insert(), rows)
            if reasons:
                conn.execute(review_reasons.insert(), reasons)
            conn.execute(stage_chunks.insert(), finished)
        counts = dict.fromkeys(chunks, 0)
        for doubt in reasons:
            counts[doubt["chunk_key"]] += 1
        return counts

    @retry_safe
    def stage_results(self, stage: str, chunk_keys: Sequence[str]) -> dict[str, dict[str, Decision]]:
        """``{chunk_key: {item_id: Decision}}`` of one stage for the given chunks."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(match_results).where(
                    match_results.c.stage == stage, match_results.c.chunk_key.in_(list(chunk_keys))
                )
            ).mappings().all()
        out: dict[str, dict[str, Decision]] = {key: {} for key in chunk_keys}
        for row in rows:
            out[row["chunk_key"]][row["item_id"]] = _decision(row)
        return out

    @retry_safe
    def finished_chunks(self, stage: str, chunk_keys: Sequence[str]) -> set[str]:
        """Which of ``chunk_keys`` the stage has written (possibly with nothing to decide)."""
        with self.engine.connect() as conn:
            return set(
                conn.execute(
                    sa.select(stage_chunks.c.chunk_key).where(
                        stage_chunks.c.stage == stage, stage_chunks.c.chunk_key.in_(list(chunk_keys))
                    )
                ).scalars()
            )

    @retry_safe
    def current_answers(self, stages: Sequence[str], chunk_keys: Sequence[str]) -> dict[str, dict[str, Decision | None]]:
        """``{chunk_key: {item_id: decision}}``: each item's latest decision among ``stages``
        (None when none of them decided it), without candidates.

        A lean read for planning and counting over thousands of chunks at once: candidate lists
        are most of a decision's bytes and nobody planning work needs them.
        """
        rank = {stage: i for i, stage in enumerate(STAGES)}
        keys = list(chunk_keys)
        out: dict[str, dict[str, Decision | None]] = {key: {} for key in keys}
        columns = [c for c in match_results.c if c.name != "candidates"]
        with self.engine.connect() as conn:
            for start in range(0, len(keys), KEYS_PER_STATEMENT):
                part = keys[start : start + KEYS_PER_STATEMENT]
                for row in conn.execute(sa.select(items.c.chunk_key, items.c.item_id).where(items.c.chunk_key.in_(part))):
                    out[row.chunk_key][row.item_id] = None
                if not stages:
                    continue
                query = sa.select(*columns).where(match_results.c.stage.in_(list(stages)), match_results.c.chunk_key.in_(part))
                held: dict[tuple[str, str], int] = {}
                for record in conn.execute(query).mappings():
                    where = (record["chunk_key"], record["item_id"])
                    if held.get(where, -1) < rank[record["stage"]]:
                        held[where] = rank[record["stage"]]
                        out[record["chunk_key"]][record["item_id"]] = _decision({**record, "candidates": []})
        return out

    @retry_safe
    def decided_by_a_person(self, chunk_keys: Sequence[str]) -> set[str]:
        """Ids of the items of ``chunk_keys`` a person has decided (a match or "none"): a lean read
        (ids only) for stages and planners that leave such items alone."""
        keys = list(chunk_keys)
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(keys), KEYS_PER_STATEMENT):
                query = sa.select(match_results.c.item_id).where(
                    match_results.c.stage == HUMAN_STAGE,
                    match_results.c.chunk_key.in_(keys[start : start + KEYS_PER_STATEMENT]),
                )
                found.update(conn.execute(query).scalars())
        return found

    @retry_safe
    def batch_match_rates(self, project: str, stage: str, batch_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """``{batch_id: (items, matched)}`` over each batch's chunks that ``stage`` has finished,
        an item counting as matched when its latest decision up to ``stage`` names an entry."""
        upto = STAGES[: STAGES.index(stage) + 1]
        with self.engine.connect() as conn:
            finished = set(
                conn.execute(
                    sa.select(stage_chunks.c.chunk_key)
                    .join(items, items.c.chunk_key == stage_chunks.c.chunk_key)
                    .where(stage_chunks.c.stage == stage, items.c.project == project, items.c.batch_id.in_(list(batch_ids)))
                    .distinct()
                ).scalars()
            )
        answers = self.current_answers(upto, sorted(finished))
        rates: dict[int, tuple[int, int]] = {}
        for key, by_item in answers.items():
            batch_id = parse_chunk_key(key)[0]
            total, matched = rates.get(batch_id, (0, 0))
            rates[batch_id] = (total + len(by_item), matched + sum(d is not None and d.matched for d in by_item.values()))
        return rates

    @retry_safe
    def final_matches(self, project: str, batch_id: int | None = None) -> pd.DataFrame:
        """One row per item: its latest stage's decision (or no row yet), with item fields."""
        query = sa.text(
            "SELECT i.item_id, f.catalog_id, f.stage, f.method, f.confidence, f.error, "
            "i.description, i.part_number, i.manufacturer, i.gtin, i.chunk_key, i.batch_id, i.extra "
            "FROM items i LEFT JOIN final_matches f ON f.project = i.project AND f.item_id = i.item_id "
            "WHERE i.project = :project" + (" AND i.batch_id = :batch_id" if batch_id is not None else "")
            + " ORDER BY i.batch_id, i.position"
        ).columns(extra=sa.JSON, confidence=sa.Float)
        with self.engine.connect() as conn:
            rows = conn.execute(query, {"project": project, "batch_id": batch_id}).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], dtype=object)

    @retry_safe
    def project_summary(self, project: str) -> dict[str, Any]:
        """Totals and match rate by stage and method, for the summary asset and the CLI."""
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(items).where(items.c.project == project)
            ).scalar_one()
            by_method = conn.execute(
                sa.text(
                    "SELECT stage, method, COUNT(*) AS n FROM final_matches "
                    "WHERE project = :project AND catalog_id IS NOT NULL GROUP BY stage, method"
                ),
                {"project": project},
            ).all()
            decided = conn.execute(
                sa.text("SELECT COUNT(*) FROM final_matches WHERE project = :project"), {"project": project}
            ).scalar_one()
            errors = conn.execute(
                sa.text("SELECT COUNT(*) FROM final_matches WHERE project = :project AND error IS NOT NULL"),
                {"project": project},
            ).scalar_one()
            reviewed = conn.execute(
                sa.select(sa.func.count()).select_from(match_results).where(
                    match_results.c.project == project, match_results.c.stage == HUMAN_STAGE
                )
            ).scalar_one()
            open_reviews = conn.execute(
                sa.text(f"SELECT COUNT(DISTINCT f.item_id) {_OPEN_REVIEWS_FROM} {_OPEN_REVIEWS_WHERE}"), {"project": project}
            ).scalar_one()
        matched = sum(n for _, _, n in by_method)
        stages: dict[str, dict[str, Any]] = {}
        for stage, method, n in by_method:
            entry = stages.setdefault(stage, {"matched": 0, "methods": {}})
            entry["matched"] += n
            entry["methods"][method] = n
        for entry in stages.values():
            entry["match_rate"] = round(entry["matched"] / total, 4) if total else 0.0
        return {
            "project": project,
            "items": total,
            "decided": decided,
            "matched": matched,
            "unmatched": total - matched,
            "errors": errors,
            "match_rate": round(matched / total, 4) if total else 0.0,
            "by_stage": {stage: stages[stage] for stage in RESULT_STAGES if stage in stages},
            "reviewed": reviewed,
            "open_reviews": open_reviews,
        }

    # -- the review queue and human decisions ------------------------------------------------

    def open_reviews(self, project: str, *, offset: int = 0, limit: int | None = None) -> list[OpenReview]:
        """Items of ``project`` waiting for a person, in arrival order (``offset``/``limit`` page it).

        An item is open when the stage of its current answer gave a review reason, or when an
        earlier stage gave one and the item is still unmatched (a later stage that also found
        nothing does not settle the doubt). Once a person decided it, it is never open again.
        When several stages gave reasons, the latest one is shown. The queue is found from the
        reasons alone; decisions and candidates are read for the requested page only, since
        their JSON is most of the cost (12,000 open items: about 6 s read whole).
        """
        query = sa.text(
            f"SELECT f.item_id, r.stage, r.reason {_OPEN_REVIEWS_FROM} "
            "JOIN items i ON i.project = f.project AND i.item_id = f.item_id "
            f"{_OPEN_REVIEWS_WHERE} ORDER BY i.batch_id, i.position"
        )
        with self.engine.connect() as conn:
            latest: dict[str, tuple[str, str]] = {}
            for item_id, stage, reason in conn.execute(query, {"project": project}):
                held = latest.get(item_id)
                if held is None or RESULT_STAGES.index(stage) > RESULT_STAGES.index(held[0]):
                    latest[item_id] = (stage, reason)
            page = list(latest)[offset : None if limit is None else offset + limit]
            decided = _stage_rows(conn, project, page)
            fields = _item_rows(conn, project, page)
        out = []
        for item_id in page:
            by_stage = decided.get(item_id, {})
            machine = [stage for stage in RESULT_STAGES if stage in by_stage and stage != HUMAN_STAGE]
            if not machine or item_id not in fields:  # changed since the queue was read
                continue
            decision = _decision(by_stage[machine[-1]])
            reason_stage, reason = latest[item_id]
            if not decision.candidates and reason_stage in by_stage:  # e.g. a stage with nothing to choose from
                decision.candidates = _decision(by_stage[reason_stage]).candidates
            out.append(OpenReview(project, fields[item_id], machine[-1], decision, reason_stage, reason))
        return out

    def open_review_count(self, project: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.text(f"SELECT COUNT(DISTINCT f.item_id) {_OPEN_REVIEWS_FROM} {_OPEN_REVIEWS_WHERE}"), {"project": project}
            ).scalar_one()

    @retry_safe
    def existing_item_ids(self, project: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are items of ``project``."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                part = list(ids[start : start + 500])
                query = sa.select(items.c.item_id).where(items.c.project == project, items.c.item_id.in_(part))
                found.update(conn.execute(query).scalars())
        return found

    def record_human_decisions(self, project: str, choices: Mapping[str, str | None], *, source: str) -> int:
        """Store a person's decisions (``{item_id: catalog_id or None for "none of these"}``) as
        ``human`` rows, all in one transaction; a person's later decision replaces their earlier one.

        Each row keeps what the machine had answered and why it was reviewed, and the candidates it
        had, so the decision can be audited and measured against later (``evaluate``). Raises
        ``ValueError`` naming the ids that are not items of ``project``, writing nothing.
        """
        ids = list(choices)
        if not ids:
            return 0
        known = self.existing_item_ids(project, ids)
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(f"not items of project {project!r}: {', '.join(repr(i) for i in missing[:20])}")
        now = _now()
        with self.engine.begin() as conn:
            chunks = {item_id: item["chunk_key"] for item_id, item in _item_rows(conn, project, ids).items()}
            previous: dict[str, Any] = {}
            for item_id, by_stage in _stage_rows(conn, project, ids).items():
                machine = [stage for stage in STAGES if stage in by_stage]
                if machine:
                    previous[item_id] = by_stage[machine[-1]]
            reasons: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                doubts = conn.execute(
                    sa.select(review_reasons.c.item_id, review_reasons.c.stage, review_reasons.c.reason).where(
                        review_reasons.c.project == project, review_reasons.c.item_id.in_(part)
                    )
                ).all()
                for item_id, _stage, reason in sorted(doubts, key=lambda r: RESULT_STAGES.index(r[1])):
                    reasons[item_id] = reason  # the latest stage's reason wins
            rows = []
            for item_id, catalog_id in choices.items():
                before = previous.get(item_id)
                answer = _decision(before) if before is not None else None
                evidence = {
                    "source": source,
                    "previous": None if before is None or answer is None else {
                        "stage": before["stage"], "catalog_id": answer.catalog_id,
                        "method": answer.method, "confidence": answer.confidence,
                    },
                    "review_reason": reasons.get(item_id),
                }
                rows.append(
                    {
                        "project": project,
                        "item_id": item_id,
                        "stage": HUMAN_STAGE,
                        "chunk_key": chunks[item_id],
                        "catalog_id": catalog_id,
                        "method": HUMAN_STAGE,
                        "confidence": 1.0,
                        "evidence": evidence,
                        "candidates": [c.to_dict() for c in (answer.candidates if answer else [])],
                        "error": None,
                        "catalog_version": before["catalog_version"] if before is not None else None,
                        "decided_at": now,
                    }
                )
            for start in range(0, len(ids), 500):
                conn.execute(
                    match_results.delete().where(
                        match_results.c.project == project,
                        match_results.c.stage == HUMAN_STAGE,
                        match_results.c.item_id.in_(ids[start : start + 500]),
                    )
                )
            conn.execute(match_results.insert(), rows)
        return len(rows)

    def human_decisions(self, project: str) -> pd.DataFrame:
        """``item_id, catalog_id`` of every item a person decided (``catalog_id`` None for "none
        of these"): the labels a person gave, for ``evaluate``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(match_results.c.item_id, match_results.c.catalog_id)
                .where(match_results.c.project == project, match_results.c.stage == HUMAN_STAGE)
                .order_by(match_results.c.item_id)
            ).all()
        return pd.DataFrame([tuple(r) for r in rows], columns=["item_id", "catalog_id"], dtype=object)

    def _taken_ids_error(self, project: str, ids: list[str]) -> ValueError:
        taken = self.existing_item_ids(project, ids)
        rows = [f"row {i + 1} ({item_id!r})" for i, item_id in enumerate(ids) if item_id in taken]
        return ValueError(
            f"item_id already ingested for project {project!r} by an earlier batch: "
            + ", ".join(rows[:20])
            + (f" and {len(rows) - 20} more" if len(rows) > 20 else "")
        )

    # -- caches ------------------------------------------------------------------------------

    @retry_safe
    def cache_get(self, namespace: str, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(cache.c.key, cache.c.value, cache.c.created_at).where(
                    cache.c.namespace == namespace, cache.c.key.in_(list(keys))
                )
            ).all()
        return {key: {"value": value, "created_at": _aware(created)} for key, value, created in rows}

    @retry_safe
    def cache_put(self, namespace: str, key: str, value: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(cache.delete().where(cache.c.namespace == namespace, cache.c.key == key))
            conn.execute(cache.insert().values(namespace=namespace, key=key, value=value, created_at=_now()))


_OPEN_REVIEWS_FROM = "FROM final_matches f JOIN review_reasons r ON r.project = f.project AND r.item_id = f.item_id"
_OPEN_REVIEWS_WHERE = (
    f"WHERE f.project = :project AND f.stage <> '{HUMAN_STAGE}' AND (r.stage = f.stage OR f.catalog_id IS NULL)"
)
"""The open-item rule of :meth:`ResultsDatabase.open_reviews`, shared with the counts."""


@dataclass(frozen=True)
class OpenReview:
    """An item waiting for a person: the item, its current answer and why it is doubted."""

    project: str
    item: dict[str, Any]
    """``item_id``, ``description``, ``part_number``, ``manufacturer``, ``gtin``, ``extra``,
    ``chunk_key``, ``batch_id``."""
    stage: str
    """The stage of the current answer."""
    decision: Decision
    reason_stage: str
    reason: str

    @property
    def item_id(self) -> str:
        return self.item["item_id"]


def _stage_rows(conn: sa.Connection, project: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{item_id: {stage: row}}`` of ``match_results`` for ``ids``, by primary key.

    JSON columns come back as text (parsed by :func:`_decision` for the rows actually used), and
    the rows are read from the table, not from ``final_matches``: filtering the view by item ids
    made SQLite evaluate it for the whole project (2,000 ids of 20,000 items took 30 s).
    """
    columns = [
        sa.type_coerce(column, sa.Text).label(column.name) if column.name in ("evidence", "candidates") else column
        for column in match_results.columns
    ]
    out: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        query = sa.select(*columns).where(match_results.c.project == project, match_results.c.item_id.in_(list(ids[start : start + 500])))
        for row in conn.execute(query).mappings():
            out.setdefault(row["item_id"], {})[row["stage"]] = row
    return out


def _item_rows(conn: sa.Connection, project: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{item_id: {item fields, extra, chunk_key, batch_id}}`` for ``ids`` of ``project``."""
    out: dict[str, dict[str, Any]] = {}
    names = (*ITEM_FIELDS, "chunk_key", "batch_id", "extra")
    for start in range(0, len(ids), 500):
        query = sa.select(*(items.c[name] for name in names)).where(
            items.c.project == project, items.c.item_id.in_(list(ids[start : start + 500]))
        )
        for row in conn.execute(query).mappings():
            out[row["item_id"]] = dict(row)
    return out


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _batch(row: Any) -> Batch:
    data = dict(row._mapping)
    data["created_at"] = _aware(data["created_at"])
    return Batch(**data)


def _decision(row: Any) -> Decision:
    evidence = row["evidence"] if isinstance(row["evidence"], dict) else json.loads(row["evidence"] or "{}")
    candidates = row["candidates"] if isinstance(row["candidates"], list) else json.loads(row["candidates"] or "[]")
    return Decision(
        item_id=row["item_id"],
        catalog_id=row["catalog_id"],
        method=row["method"],
        confidence=row["confidence"],
        evidence=evidence,
        candidates=[Candidate.from_dict(c) for c in candidates],
        error=row["error"],
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the webserver, the daemon's runs and the CLI read while one of them writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
