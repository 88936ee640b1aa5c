"""Turning an item file into a stored arrival batch, and keeping the inbox honest.

Shared by the inbox sensor and the CLI so that both accept and refuse exactly the same files.
A refused file is moved aside with a reason file beside it; an accepted one is archived. Nothing
is deleted, so nothing is lost.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from matching_pipeline.core.readers import ITEMS, SUPPORTED_SUFFIXES, InputError, Problem, content_hash, read_table
from matching_pipeline.store import PROJECT_NAME, Batch, ResultsDatabase


def ingest_file(
    db: ResultsDatabase,
    path: Path,
    project: str,
    *,
    encoding: str = "utf-8",
    columns: Mapping[str, str] | None = None,
) -> Batch:
    """Validate ``path`` and store it as a batch of ``project`` (or return the batch it already is)."""
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
    frame = read_table(path, ITEMS, columns=columns, encoding=encoding, data=data)
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


def scan_inbox(
    db: ResultsDatabase,
    inbox: Path,
    data_dir: Path,
    *,
    encoding: str = "utf-8",
    columns: Mapping[str, str] | None = None,
    limit: int = 50,
) -> list[InboxOutcome]:
    """Ingest up to ``limit`` files from ``inbox/<project>/``, oldest first.

    Files still being written are left for the next scan: a file counts once its size has not
    changed for two seconds.
    """
    outcomes: list[InboxOutcome] = []
    now = datetime.now(UTC).timestamp()
    candidates = sorted(
        (p for p in inbox.glob("*/*") if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
    )
    for path in candidates[:limit]:
        if now - path.stat().st_mtime < 2:
            continue
        project = path.parent.name
        try:
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(path, [Problem(f"unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")])
            batch = ingest_file(db, path, project, encoding=encoding, columns=columns)
        except InputError as exc:
            moved = _move(path, data_dir / "rejected" / project, reason=str(exc))
            outcomes.append(InboxOutcome(path, project, error=str(exc), moved_to=moved))
            continue
        label = batch.label if batch.is_new else f"{batch.label}.duplicate"
        moved = _move(path, data_dir / "processed" / project, prefix=label)
        outcomes.append(InboxOutcome(path, project, batch=batch, moved_to=moved))
    return outcomes


def _move(path: Path, folder: Path, *, reason: str | None = None, prefix: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder / f"{prefix or stamp}-{path.name}"
    counter = 1
    while target.exists():
        target = folder / f"{prefix or stamp}-{counter}-{path.name}"
        counter += 1
    shutil.move(str(path), target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n", encoding="utf-8")
    return target
