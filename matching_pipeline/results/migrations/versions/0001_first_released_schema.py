"""The schema as first released, before migrations: items, batches, decisions, caches, final_matches.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

Databases created by releases before migrations existed hold exactly this (or this plus 0002's
tables) and no version table; they are recognised and stamped, not re-created
(``results/migrate.py``). Frozen: never import the live schema here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGE_ORDER = "WHEN 'enhanced' THEN 0 WHEN 'ai' THEN 1 WHEN 'web_search' THEN 2"
FINAL_MATCHES_VIEW = f"""
CREATE VIEW final_matches AS
SELECT r.* FROM match_results r
WHERE (CASE r.stage {_STAGE_ORDER} END) = (
    SELECT MAX(CASE l.stage {_STAGE_ORDER} END) FROM match_results l
    WHERE l.project = r.project AND l.item_id = r.item_id
)
"""
"""The first release's view: the latest of the three machine stages (no ``human`` stage yet)."""


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("source_name", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project", "content_sha256", name="uq_batches_project_content"),
    )
    op.create_table(
        "items",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("batch_id", sa.Integer, sa.ForeignKey("batches.id"), nullable=False),
        sa.Column("chunk_key", sa.Text, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("part_number", sa.Text),
        sa.Column("manufacturer", sa.Text),
        sa.Column("gtin", sa.Text),
        sa.Column("extra", sa.JSON, nullable=False),
    )
    op.create_index("ix_items_chunk_key", "items", ["chunk_key"])
    op.create_table(
        "match_results",
        sa.Column("project", sa.String(64), primary_key=True),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("stage", sa.String(16), primary_key=True),
        sa.Column("chunk_key", sa.Text, nullable=False),
        sa.Column("catalog_id", sa.Text),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("candidates", sa.JSON, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("catalog_version", sa.String(80)),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_match_results_chunk_key", "match_results", ["chunk_key"])
    op.create_table(
        "stage_chunks",
        sa.Column("stage", sa.String(16), primary_key=True),
        sa.Column("chunk_key", sa.Text, primary_key=True),
        sa.Column("decided", sa.Integer, nullable=False),
        sa.Column("matched", sa.Integer, nullable=False),
        sa.Column("catalog_version", sa.String(80)),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "response_cache",
        sa.Column("namespace", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(FINAL_MATCHES_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS final_matches")
    for table in ("response_cache", "stage_chunks", "match_results", "items", "batches"):
        op.drop_table(table)
