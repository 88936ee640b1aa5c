"""The review queue and human decisions: review_reasons, schema_marks, final_matches ranks human first.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

The release before migrations created these tables at start-up, so a database may hold them while
stamped at 0001 (``results/migrate.py`` stamps 0002 only when the view is current too): each table
is created only when absent, and the view is always replaced. Frozen: never import the live schema.
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RANKED = "WHEN 'enhanced' THEN 0 WHEN 'ai' THEN 1 WHEN 'web_search' THEN 2 WHEN 'human' THEN 3"
FINAL_MATCHES_VIEW = f"""
CREATE VIEW final_matches AS
SELECT r.* FROM match_results r
WHERE (CASE r.stage {_RANKED} END) = (
    SELECT MAX(CASE l.stage {_RANKED} END) FROM match_results l
    WHERE l.project = r.project AND l.item_id = r.item_id
)
"""
"""A person's decision (``human``) ranks above every machine stage."""

_PREVIOUS = "WHEN 'enhanced' THEN 0 WHEN 'ai' THEN 1 WHEN 'web_search' THEN 2"
PREVIOUS_VIEW = FINAL_MATCHES_VIEW.replace(_RANKED, _PREVIOUS)


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "review_reasons" not in present:
        op.create_table(
            "review_reasons",
            sa.Column("project", sa.String(64), primary_key=True),
            sa.Column("item_id", sa.Text, primary_key=True),
            sa.Column("stage", sa.String(16), primary_key=True),
            sa.Column("chunk_key", sa.Text, nullable=False),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_review_reasons_chunk_key", "review_reasons", ["chunk_key"])
    if "schema_marks" not in present:
        op.create_table(
            "schema_marks",
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("fingerprint", sa.String(64), nullable=False),
        )
    _install_view(FINAL_MATCHES_VIEW, mark=True)


def downgrade() -> None:
    _install_view(PREVIOUS_VIEW, mark=False)
    op.drop_table("schema_marks")
    op.drop_index("ix_review_reasons_chunk_key", table_name="review_reasons")
    op.drop_table("review_reasons")


def _install_view(sql: str, *, mark: bool) -> None:
    marks = sa.table("schema_marks", sa.column("name", sa.String), sa.column("fingerprint", sa.String))
    op.execute(marks.delete().where(marks.c.name == "final_matches"))
    op.execute("DROP VIEW IF EXISTS final_matches")
    op.execute(sql)
    if mark:
        fingerprint = hashlib.sha256(sql.encode()).hexdigest()[:32]
        op.execute(marks.insert().values(name="final_matches", fingerprint=fingerprint))
