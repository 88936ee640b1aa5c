"""retired_batches: which batches had their chunk keys retired from Dagster's partition set.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Created only when absent: before this revision, ``results/retired.py`` created the table itself on
first use (never released, but development databases may hold it). Frozen: never import the live
schema here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "retired_batches" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "retired_batches",
            sa.Column("batch_id", sa.Integer, primary_key=True),
            sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("retired_batches")
