"""The results database's schema as this code expects it: tables (SQLAlchemy Core) and views.

This module is the *model*; ``results/migrations/`` holds the revisions that bring any database to
it (see :mod:`matching_pipeline.results.migrate`). A change here needs a new revision too:
``tests/test_migrations.py`` fails while the two disagree (``alembic check`` for the tables, the
view's fingerprint for ``final_matches``). README "Schema changes" says how to write one.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from matching_pipeline.core.models import RESULT_STAGES

VERSION_TABLE = "results_alembic_version"
"""Alembic's record of the applied revision. Not Alembic's default ``alembic_version``: Dagster's
storage migrates itself with Alembic too, and a results database that shares a Postgres database
with it must not read Dagster's revision as its own."""

metadata = sa.MetaData()

batches = sa.Table(
    "batches",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("project", sa.String(64), nullable=False),
    sa.Column("source_name", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("item_count", sa.Integer, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("project", "content_sha256", name="uq_batches_project_content"),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=False),
    sa.Column("chunk_key", sa.Text, nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("part_number", sa.Text),
    sa.Column("manufacturer", sa.Text),
    sa.Column("gtin", sa.Text),
    sa.Column("extra", sa.JSON, nullable=False),
)

match_results = sa.Table(
    "match_results",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("stage", sa.String(16), primary_key=True),
    sa.Column("chunk_key", sa.Text, nullable=False, index=True),
    sa.Column("catalog_id", sa.Text),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("candidates", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("catalog_version", sa.String(80)),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)

stage_chunks = sa.Table(
    "stage_chunks",
    metadata,
    sa.Column("stage", sa.String(16), primary_key=True),
    sa.Column("chunk_key", sa.Text, primary_key=True),
    sa.Column("decided", sa.Integer, nullable=False),
    sa.Column("matched", sa.Integer, nullable=False),
    sa.Column("catalog_version", sa.String(80)),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
)
"""One row per chunk a stage has finished, even when it had nothing left to decide there."""

review_reasons = sa.Table(
    "review_reasons",
    metadata,
    sa.Column("project", sa.String(64), primary_key=True),
    sa.Column("item_id", sa.Text, primary_key=True),
    sa.Column("stage", sa.String(16), primary_key=True),
    sa.Column("chunk_key", sa.Text, nullable=False, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""Why a stage's decision on an item should be reviewed (see ``core/review.py``). Written and
replaced with that stage's results, in the same transaction, so the queue never disagrees with
the decisions; which items are *open* is derived from it and ``final_matches`` when read."""

schema_marks = sa.Table(
    "schema_marks",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
)
"""Fingerprints of the views a migration installed. The release before migrations re-created a
view at start-up when its mark differed from the code's, so the marks let processes of that release,
still running during an upgrade, leave the migrated view alone; they also let the tests check
that the newest migration installs the view this module defines."""

retired_batches = sa.Table(
    "retired_batches",
    metadata,
    sa.Column("batch_id", sa.Integer, primary_key=True),
    sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
)
"""Batches whose chunk keys were retired from Dagster's partition set (``results/retired.py``)."""

cache = sa.Table(
    "response_cache",
    metadata,
    sa.Column("namespace", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

_STAGE_ORDER = " ".join(f"WHEN '{stage}' THEN {rank}" for rank, stage in enumerate(RESULT_STAGES))
FINAL_MATCHES_VIEW = f"""
CREATE VIEW final_matches AS
SELECT r.* FROM match_results r
WHERE (CASE r.stage {_STAGE_ORDER} END) = (
    SELECT MAX(CASE l.stage {_STAGE_ORDER} END) FROM match_results l
    WHERE l.project = r.project AND l.item_id = r.item_id
)
"""
"""An item's answer: its row of the highest-ranked stage, a person's (``human``) above all.
Installed by a migration (autogenerate does not see views), which also writes its fingerprint to
``schema_marks`` from its own frozen copy of the SQL: the two fingerprints are equal only when the
newest migration installs exactly the view defined here."""
FINAL_MATCHES_FINGERPRINT = hashlib.sha256(FINAL_MATCHES_VIEW.encode()).hexdigest()[:32]
