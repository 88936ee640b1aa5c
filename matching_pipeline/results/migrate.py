"""Bring a results database to the schema this code expects, whenever it is opened.

The schema changes between releases, and every process (webserver, daemon, runs, CLI, API) opens the
database on its own, often several at once on a fresh one. So opening runs ``alembic upgrade head``
(revisions in ``results/migrations/``) under a lock held for the whole upgrade: a Postgres advisory
lock, or SQLite's write lock (``BEGIN IMMEDIATE``). Whoever waits finds the work done. A database
already at head is recognised without taking any lock, so a start never waits for a writer.

Databases created before migrations existed have no version table. They are recognised by their
tables and columns and stamped at the revision they hold (:data:`RELEASED_BEFORE_MIGRATIONS`), so
the upgrade adds what they lack and nothing is created twice.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from matching_pipeline.results.schema import VERSION_TABLE

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

MIGRATION_LOCK = 727274
"""Postgres advisory lock key serialising upgrades (the key the store used before migrations, so an
older process creating its schema and a newer one migrating also wait for each other)."""

_FIRST_RELEASE: dict[str, frozenset[str]] = {
    "batches": frozenset({"id", "project", "source_name", "content_sha256", "item_count", "chunk_count", "created_at"}),
    "items": frozenset(
        {"project", "item_id", "batch_id", "chunk_key", "position", "description", "part_number", "manufacturer", "gtin", "extra"}
    ),
    "match_results": frozenset(
        {
            "project", "item_id", "stage", "chunk_key", "catalog_id", "method", "confidence", "evidence",
            "candidates", "error", "catalog_version", "decided_at",
        }
    ),
    "stage_chunks": frozenset({"stage", "chunk_key", "decided", "matched", "catalog_version", "decided_at"}),
    "response_cache": frozenset({"namespace", "key", "value", "created_at"}),
}
_REVIEW_RELEASE: dict[str, frozenset[str]] = {
    **_FIRST_RELEASE,
    "review_reasons": frozenset({"project", "item_id", "stage", "chunk_key", "reason", "created_at"}),
    "schema_marks": frozenset({"name", "fingerprint"}),
}
_REVIEW_RELEASE_VIEW_MARK = "009114e6c582af9fe3e89621eb306089"
"""The ``final_matches`` fingerprint the review release wrote: the view of revision 0002."""

RELEASED_BEFORE_MIGRATIONS: tuple[tuple[str, dict[str, frozenset[str]], str | None], ...] = (
    ("0002", _REVIEW_RELEASE, _REVIEW_RELEASE_VIEW_MARK),
    ("0001", _FIRST_RELEASE, None),
)
"""Frozen record of what releases without migrations created: (revision, tables and their columns,
``final_matches`` mark), newest first. Never changes: every later database has a version table."""


class SchemaError(RuntimeError):
    """The database cannot be brought to this code's schema; the message says why, in one line."""


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """The migrations' configuration, built in code so that it ships inside the package (no
    ``alembic.ini`` needed). With ``connection``, ``env.py`` migrates on it instead of connecting."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def script_directory() -> ScriptDirectory:
    """The revisions shipped with the package, read once per process."""
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "results/migrations/versions holds no revision"
    return head


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is stamped at (None: fresh, or created before migrations)."""
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade_schema(engine: sa.Engine) -> None:
    """Run ``alembic upgrade head`` unless the database is there already; see the module text."""
    head = head_revision()
    with engine.connect() as connection:
        if current_revision(connection) == head:
            return
    with _migration_lock(engine) as connection:
        current = current_revision(connection)
        if current == head:  # another process did it while this one waited
            return
        if current is not None:
            try:
                script_directory().get_revision(current)
            except CommandError:
                raise SchemaError(
                    f"the results database is at schema revision {current!r}, which this version of "
                    f"matching_pipeline does not know (its newest is {head!r}): upgrade the package"
                ) from None
        command.upgrade(alembic_config(connection), "head")


def stamp_if_released_before_migrations(context: MigrationContext, scripts: ScriptDirectory) -> str | None:
    """Stamp a database created before migrations at the revision it holds; return that revision.

    Called by ``env.py`` before every online migration, inside its transaction. A database with no
    tables of this package is fresh and left alone; one holding some of them but not what any
    release created is refused rather than guessed at.
    """
    connection = context.connection
    if connection is None or context.get_current_revision() is not None:
        return None
    inspector = sa.inspect(connection)
    tables = set(inspector.get_table_names()) & set(_REVIEW_RELEASE)
    if not tables:
        return None
    columns = {table: {c["name"] for c in inspector.get_columns(table)} for table in tables}
    for revision, released, view_mark in RELEASED_BEFORE_MIGRATIONS:
        if not all(table in columns and columns[table] >= wanted for table, wanted in released.items()):
            continue
        if view_mark is not None and _final_matches_mark(connection, inspector) != view_mark:
            continue
        context.stamp(scripts, revision)
        return revision
    described = ", ".join(f"{table}({', '.join(sorted(columns[table]))})" for table in sorted(columns))
    raise SchemaError(
        f"the results database has no schema revision and its tables are not those of any release: {described}"
    )


def _final_matches_mark(connection: sa.Connection, inspector: sa.Inspector) -> str | None:
    if "final_matches" not in inspector.get_view_names():
        return None
    return connection.execute(
        sa.text("SELECT fingerprint FROM schema_marks WHERE name = 'final_matches'")
    ).scalar_one_or_none()


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection in a transaction that holds the migration lock until it commits.

    SQLite: the driver is put in autocommit mode for this connection so that ``BEGIN IMMEDIATE``
    (the database's write lock, waited for up to the engine's busy timeout) starts the transaction
    and the DDL runs inside it, not in the implicit transactions pysqlite would otherwise commit
    around each statement.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                if connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
                    connection.exec_driver_sql("ROLLBACK")
                raise
            connection.exec_driver_sql("COMMIT")
        return
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        yield connection
