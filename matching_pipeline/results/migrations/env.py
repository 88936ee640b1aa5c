"""Alembic's entry point for the results database.

Run in code by :func:`matching_pipeline.results.migrate.upgrade_schema` with the connection it
holds the migration lock on (``config.attributes["connection"]``), or by the ``alembic`` command
(``[tool.alembic]`` in pyproject.toml) against ``-x url=...`` or ``MATCHING_DATABASE_URL``, for
writing a new revision (README, "Schema changes").
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from alembic import context

from matching_pipeline.results.migrate import stamp_if_released_before_migrations
from matching_pipeline.results.schema import VERSION_TABLE, metadata


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    """Compare only this package's tables: the results database may share a Postgres database
    with Dagster's storage, whose tables a ``--autogenerate`` must never propose to drop."""
    return type_ != "table" or name in metadata.tables


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_name=_ours,
        compare_type=True,
        render_as_batch=True,  # SQLite alters a table by copying it; batch mode writes that for us
        **kwargs,
    )


def _run(connection: sa.Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        stamp_if_released_before_migrations(context.get_context(), context.script)
        context.run_migrations()


def _url() -> str:
    # Only the ``alembic`` command line gets here (the package hands its own connection in through
    # ``config.attributes``), outside the package's settings: so the variable is read directly and
    # has no default, rather than through a Settings whose SQLite default under the working
    # directory would silently pick a database.
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("MATCHING_DATABASE_URL")
    if not url:
        raise SystemExit("name the results database: alembic -x url=sqlite:///path/results.db ... (or MATCHING_DATABASE_URL)")
    return url


if context.is_offline_mode():
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (given := context.config.attributes.get("connection")) is not None:
    _run(given)
else:
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()
