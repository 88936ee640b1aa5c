"""Lost database connections: recognise them, retry what is safe, and say them in one line.

Both databases can go away under a running job: the results database (SQLAlchemy, this package)
and Dagster's storage (dagster-postgres or SQLite). A Postgres restart drops every connection and
refuses new ones for a few seconds; SQLite answers "database is locked" while another process
holds a long write. None of that is a bug in the pipeline, so none of it should reach a user as a
traceback: operations that are safe to repeat (reads, and writes that replace a chunk's results
in one transaction, which either committed or rolled back) are retried for a short while; after
that, or for anything not safe to repeat, the fault surfaces as :class:`DatabaseUnavailable` or
is recognised by :func:`connection_fault` and reported in one line.

This module depends on SQLAlchemy and settings only (no Dagster), so the store can use it.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from matching_pipeline.settings import db_retry_seconds

P = ParamSpec("P")
T = TypeVar("T")


_TRANSIENT = re.compile(
    r"could not connect|connection refused|server closed the connection|terminating connection|"
    r"the database system is (starting up|shutting down|in recovery|not yet accepting)|"
    r"connection (already )?closed|connection reset|ssl syscall|no connection to the server|"
    r"database is locked|too many retries for db connection|could not receive data|"
    r"cannot connect now|connection to server .* failed|server conn crashed|broken pipe",
    re.IGNORECASE,
)


class DatabaseUnavailable(RuntimeError):
    """A database stayed unreachable for longer than the retry window. The message is one line."""


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def connection_fault(exc: BaseException) -> str | None:
    """The one-line cause when ``exc`` (or what caused it) is a lost or refused DB connection.

    The deepest driver error names what happened ("connection to server at ... refused");
    wrappers only say that retries ran out, so the message is taken from the former and says
    whether Dagster's storage was the one lost.
    """
    chain = _chain(exc)
    causes: list[str] = []
    for error in chain:
        if isinstance(error, DatabaseUnavailable):
            return str(error)
        if isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated:
            causes.append(_first_line(str(error.orig) or str(error)) or type(error).__name__)
            continue
        name = type(error).__name__
        if name in ("OperationalError", "InterfaceError", "DagsterPostgresException") or isinstance(
            error, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError)
        ):
            text = str(getattr(error, "orig", None) or error)
            if _TRANSIENT.search(text) or isinstance(error, sa.exc.DisconnectionError):
                causes.append(_first_line(text))
    if not causes:
        return None
    storage = any(type(error).__name__ == "DagsterPostgresException" for error in chain)
    return f"{'Dagster storage: ' if storage else ''}{causes[-1]}"


def retry_safe(fn: Callable[P, T]) -> Callable[P, T]:
    """Repeat ``fn`` while the database connection is lost, for up to ``MATCHING_DB_RETRY_SECONDS``
    (30 by default: a Postgres restart takes seconds).

    Only for operations that are safe to repeat as a whole: reads, and writes done in one
    transaction that replace rather than add. The engine's ``pool_pre_ping`` drops connections
    the restart killed, so the repeat runs on a fresh one.
    """

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        window = db_retry_seconds()
        deadline = time.monotonic() + window
        delay = 0.25
        while True:
            try:
                return fn(*args, **kwargs)
            except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.DisconnectionError) as exc:
                cause = connection_fault(exc)
                if cause is None:
                    raise
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"results database unreachable for {window:g}s: {cause}"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    return wrapper
