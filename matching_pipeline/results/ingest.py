"""Turning an item file into a stored arrival batch, and keeping the inbox honest.

Shared by the inbox sensor and the CLI so that both accept and refuse exactly the same files.
A refused file is moved aside with a reason file beside it; an accepted one is archived. Nothing
is deleted, so nothing is lost.

The inbox takes a file only once it is complete, because a half-copied file stored as a batch is
a silent loss that a re-send cannot repair (its ids are then taken). Three conventions, strongest
first:

- **atomic names**: a name that starts with ``.`` or ends with ``.tmp``, ``.part`` or ``.partial``
  is never read; write under such a name and rename when done;
- **markers**: when ``<name>.done`` exists beside ``<name>``, the file is complete and is taken at
  once (the marker is removed once the file has moved); ``require_done`` makes markers mandatory;
- **settling** (the fallback): a file without a marker is taken once its size and modification
  time have stayed the same across sightings ``settle_seconds`` apart. The sightings are kept by
  the caller between scans (the sensor's cursor), so the check uses this machine's clock, not
  the file's mtime, which copies and network shares may set to anything. A writer that pauses
  longer than the settle time can still be caught mid-file: use one of the conventions above.

No file can jam the inbox: any exception while reading, validating or storing one file rejects
that file (with the exception named in its reason file) and the scan goes on with the next. The
one exception is a results database that does not answer at all: that is not the file's fault,
so the file stays for the next scan.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from matching_pipeline.core.readers import (
    DEFAULT_READ,
    ITEMS,
    SUPPORTED_SUFFIXES,
    InputError,
    Problem,
    ReadOptions,
    content_hash,
    read_table,
)
from matching_pipeline.results.store import PROJECT_NAME, Batch, ResultsDatabase

PARTIAL_SUFFIXES = (".tmp", ".part", ".partial")
"""Names that say "still being written": never read until renamed."""

DONE_SUFFIX = ".done"
"""``<name>.done`` beside ``<name>`` says the file is complete."""

MAX_NAME_BYTES = 255 - len(".reason.txt") - 8
"""Longest archived name, leaving room for the reason file's suffix and a counter."""

Where = TypeVar("Where")
"""How an inbox names a file and its marker: a :class:`Path`, or an object store's path string."""


def ingest_file(
    db: ResultsDatabase,
    path: Path,
    project: str,
    *,
    read: ReadOptions = DEFAULT_READ,
) -> Batch:
    """Validate ``path`` and store it as a batch of ``project`` (or return the batch it already is).

    Every problem with the file raises :class:`InputError`; errors of the results database
    itself propagate unchanged, since they say nothing about the file.
    """
    if not PROJECT_NAME.match(project):
        raise InputError(path, [Problem(f"project name {project!r} must be letters, digits, '-' or '_'")])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, [Problem(f"cannot be read: {exc.strerror or exc}")]) from exc
    digest = content_hash(data)
    existing = db.find_batch(project, digest)
    if existing:
        return existing
    frame = read_table(path, ITEMS, columns=read.columns, encoding=read.encoding, data=data, limits=read.limits)
    try:
        return db.add_batch(project, path.name, digest, frame)
    except ValueError as exc:
        raise InputError(path, [Problem(str(exc), column="item_id")]) from exc


@dataclass(frozen=True)
class InboxOutcome:
    path: Path
    project: str
    batch: Batch | None = None
    error: str | None = None
    moved_to: Path | None = None
    note: str | None = None
    """Something the operator should know that is not a rejection (e.g. the archive move failed)."""

    @property
    def deferred(self) -> bool:
        """Neither stored nor rejected: the file stays in the inbox for a later scan."""
        return self.batch is None and self.error is None


@dataclass(frozen=True)
class Sighting:
    """A file's size and mtime as last seen, and since when (this machine's clock) they held."""

    size: int
    mtime_ns: int
    since: float


@dataclass
class InboxScan:
    """What one scan did, and the sightings to hand to the next scan."""

    outcomes: list[InboxOutcome] = field(default_factory=list)
    seen: dict[str, Sighting] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)
    """Files left for a later scan: not settled yet, or no ``.done`` marker when one is required."""

    def cursor(self) -> str:
        """The sightings as a sensor cursor."""
        return json.dumps({"seen": {k: [s.size, s.mtime_ns, s.since] for k, s in sorted(self.seen.items())}})


def sightings_from_cursor(cursor: str | None) -> dict[str, Sighting]:
    """The sightings an earlier scan left in a sensor cursor; none from a missing or foreign one."""
    try:
        raw = json.loads(cursor or "{}").get("seen", {})
        return {str(k): Sighting(int(v[0]), int(v[1]), float(v[2])) for k, v in raw.items()}
    except (ValueError, TypeError, AttributeError, IndexError, KeyError):
        return {}  # an old or hand-edited cursor: files just settle once more


def is_partial_name(name: str) -> bool:
    """Whether a name says the file is still being written (or is a marker, not data)."""
    lowered = name.lower()
    return name.startswith(".") or lowered.endswith(PARTIAL_SUFFIXES) or lowered.endswith(DONE_SUFFIX)


@dataclass(frozen=True)
class InboxRules:
    """When an inbox file is complete enough to take, and how many files one scan takes.

    The one statement of the conventions in this module's docstring, for the local folder and the
    object-store inbox alike, so that both wait for exactly the same files and a setting means the
    same in both. Built once per sensor from ``InboxResource.rules()``. Names that say "partial"
    are the caller's to skip (:func:`is_partial_name`) before it spends a stat or a listing on them.
    """

    settle_seconds: float = 2.0
    require_done: bool = False
    limit: int = 50
    """Files taken per scan: a backlog is worked off over several sensor ticks, each kept short."""

    def is_ready(
        self,
        scan: InboxScan,
        key: str,
        size: int,
        stamp: int,
        *,
        has_marker: bool,
        previous: Mapping[str, Sighting],
        now: float,
    ) -> bool:
        """Whether the file ``key`` (``<project>/<name>``) is complete now; if not, it is listed in
        ``scan.waiting``.

        ``stamp`` is whatever changes when the file is rewritten (a file's mtime, an object's
        ETag). A file that has to settle gets its sighting in ``scan.seen``: the one in
        ``previous`` while size and stamp are unchanged, else a new one from ``now``; a marked
        file needs none, so a sighting it had is dropped.
        """
        if has_marker:
            return True
        if self.require_done:
            scan.waiting.append(key)
            return False
        before = previous.get(key)
        if before is None or (before.size, before.mtime_ns) != (size, stamp):
            before = Sighting(size, stamp, now)
        scan.seen[key] = before
        if now - before.since >= self.settle_seconds:
            return True
        scan.waiting.append(key)
        return False

    def take(
        self,
        scan: InboxScan,
        ready: Sequence[tuple[str, Where, Where]],
        take_file: Callable[[Where], InboxOutcome | None],
        drop_marker: Callable[[Where], None],
    ) -> None:
        """Take the first ``limit`` of ``ready`` (``(key, file, marker)``, in the order to take them).

        A taken file's marker goes once the file has moved, and so does its sighting; a file not
        taken keeps its sighting, so a settled file over this scan's budget is not made to settle
        again. ``take_file`` never raises and returns ``None`` for a file that vanished meanwhile.
        """
        for key, path, marker in ready[: self.limit]:
            outcome = take_file(path)
            if outcome is None:
                continue
            scan.outcomes.append(outcome)
            if outcome.deferred:
                break  # the results database is down: every other file would fail the same way
            scan.seen.pop(key, None)
            if outcome.moved_to is not None:
                drop_marker(marker)


DEFAULT_RULES = InboxRules()
"""The defaults of the settings (``MATCHING_INBOX_SETTLE_SECONDS``, ``MATCHING_INBOX_REQUIRE_DONE``)."""


def scan_inbox(
    db: ResultsDatabase,
    inbox: Path,
    data_dir: Path,
    *,
    read: ReadOptions = DEFAULT_READ,
    rules: InboxRules = DEFAULT_RULES,
    seen: Mapping[str, Sighting] | None = None,
    now: float | None = None,
) -> InboxScan:
    """Ingest the complete files in ``inbox/<project>/`` (as many as ``rules`` allow), oldest
    mtime first.

    ``seen`` is what the previous scan returned in :attr:`InboxScan.seen`; without it every file
    without a marker counts as first seen now (so, with a settle time, it waits for the next scan).
    """
    now = time.time() if now is None else now
    previous = seen or {}
    scan = InboxScan()
    ready: list[tuple[int, str, Path, Path]] = []
    for path in inbox.glob("*/*"):
        if is_partial_name(path.name):
            continue
        try:
            stat = path.stat()
            if not path.is_file():
                continue
            marker = path.with_name(path.name + DONE_SUFFIX)
            has_marker = marker.is_file()
        except OSError:
            continue  # vanished (renamed, moved away) between listing and looking
        key = f"{path.parent.name}/{path.name}"
        if rules.is_ready(scan, key, stat.st_size, stat.st_mtime_ns, has_marker=has_marker, previous=previous, now=now):
            ready.append((stat.st_mtime_ns, key, path, marker))

    ready.sort(key=lambda entry: entry[0])
    rules.take(
        scan,
        [(key, path, marker) for _, key, path, marker in ready],
        lambda path: _take(db, path, data_dir, read=read),
        lambda marker: marker.unlink(missing_ok=True),
    )
    return scan


@dataclass(frozen=True)
class Verdict:
    """What became of one complete inbox file, before it is moved: stored (``batch``), refused
    (``reason``, the text of its reason file), or left for later (``unavailable``: the results
    database did not answer, which is not the file's fault)."""

    batch: Batch | None = None
    reason: str | None = None
    unavailable: str | None = None


def judge_file(
    db: ResultsDatabase,
    path: Path,
    project: str,
    *,
    read: ReadOptions = DEFAULT_READ,
) -> Verdict:
    """Ingest one complete file of an inbox, whatever kind of inbox; never raises.

    The local folder and the object-store inbox both come through here, so they accept, refuse
    and explain exactly alike.
    """
    try:
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise InputError(path, [Problem(f"unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")])
        return Verdict(batch=ingest_file(db, path, project, read=read))
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, it must not stop the other files
        if not isinstance(exc, InputError) and isinstance(exc, sa.exc.SQLAlchemyError) and not _answers(db):
            return Verdict(unavailable=type(exc).__name__)
        reason = str(exc) if isinstance(exc, InputError) else str(
            InputError(path, [Problem(f"could not be stored ({type(exc).__name__}: {_one_line(exc)})")])
        )
        return Verdict(reason=reason)


def archive_prefix(batch: Batch) -> str:
    """The prefix of an accepted file's archived name: its batch, marked when a duplicate."""
    return batch.label if batch.is_new else f"{batch.label}.duplicate"


def _take(
    db: ResultsDatabase,
    path: Path,
    data_dir: Path,
    *,
    read: ReadOptions,
) -> InboxOutcome | None:
    """Ingest one complete file and move it to processed/ or rejected/; never raises."""
    project = path.parent.name
    verdict = judge_file(db, path, project, read=read)
    if verdict.batch is None and not path.exists():
        return None  # taken away while we read it: nothing to reject, nothing lost
    if verdict.unavailable:
        return InboxOutcome(path, project, note=f"left in the inbox: the results database is unavailable ({verdict.unavailable})")
    if verdict.reason is not None:
        try:
            moved = _move(path, data_dir / "rejected" / project, reason=verdict.reason)
        except OSError as move_error:
            return InboxOutcome(path, project, error=verdict.reason, note=f"could not be moved aside: {move_error}")
        return InboxOutcome(path, project, error=verdict.reason, moved_to=moved)
    batch = verdict.batch
    assert batch is not None
    try:
        moved = _move(path, data_dir / "processed" / project, prefix=archive_prefix(batch))
    except OSError as move_error:  # stored all the same; the next scan sees a duplicate and moves it
        return InboxOutcome(path, project, batch=batch, note=f"stored, but could not be archived: {move_error}")
    return InboxOutcome(path, project, batch=batch, moved_to=moved)


def _answers(db: ResultsDatabase) -> bool:
    """Whether the results database answers a trivial query right now."""
    try:
        with db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering"
        return False


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


def archived_name(prefix: str, name: str) -> str:
    """``<prefix>-<name>``, shortened in the middle of the stem if the filesystem would refuse it."""
    full = f"{prefix}-{name}"
    if len(full.encode("utf-8")) <= MAX_NAME_BYTES:
        return full
    suffix = Path(name).suffix if len(Path(name).suffix) <= 16 else ""
    stem = full[: len(full) - len(suffix)]
    while len((stem + "~" + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return stem + "~" + suffix


def _move(path: Path, folder: Path, *, reason: str | None = None, prefix: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder / archived_name(prefix or stamp, path.name)
    counter = 1
    while target.exists():
        target = folder / archived_name(f"{prefix or stamp}-{counter}", path.name)
        counter += 1
    shutil.move(str(path), target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target
