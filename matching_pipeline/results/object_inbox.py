"""The inbox as a bucket prefix: item files as objects under ``<root>/<project>/<name>``.

Workers in Kubernetes share no disk, so a customer's files can arrive in object storage instead
of a local folder. This is the local inbox (``ingest.py``) over an fsspec filesystem, with the
same semantics because it goes through the same code: each complete object is downloaded to a
temporary file of the same name and judged by :func:`ingest.judge_file` (validation, duplicates,
the wording of a refusal), then moved

- when stored, to ``<root>/processed/<project>/<batch label>-<name>``;
- when refused, to ``<root>/rejected/<project>/<UTC stamp>-<name>`` with a
  ``<that name>.reason.txt`` object beside it;
- when the results database does not answer, nowhere: it stays for the next scan.

The completeness conventions are the local inbox's too, applied by the same
:class:`ingest.InboxRules`: names starting with ``.`` or ending in ``.tmp``, ``.part`` or
``.partial`` are never read; a ``<name>.done`` object makes ``<name>`` complete at once (and is
deleted once ``<name>`` has moved); otherwise an object is taken once its size and ETag held across
sightings ``settle_seconds`` apart. (An S3 PUT or multipart upload only shows its object when
complete, so settling matters for stores mounted as filesystems and for writers that upload a file
in several objects; it costs one sensor tick.) Moves on S3 are a copy then a delete: a worker that
dies between the two leaves the file in the inbox, and the next scan takes it again as a duplicate
of its own batch, so nothing is lost or stored twice.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fsspec import AbstractFileSystem

from matching_pipeline.core.readers import DEFAULT_READ, ReadOptions
from matching_pipeline.results.ingest import (
    DEFAULT_RULES,
    DONE_SUFFIX,
    InboxOutcome,
    InboxRules,
    InboxScan,
    Sighting,
    archive_prefix,
    archived_name,
    is_partial_name,
    judge_file,
)
from matching_pipeline.results.store import PROJECT_NAME, ResultsDatabase

ARCHIVE_FOLDERS = ("processed", "rejected")
"""Top-level names under the root that hold archives, not projects."""


def _stamp(entry: Mapping[str, Any]) -> int:
    """What changes when an object is rewritten (its ETag; a file's mtime on ``file://``), as the
    integer the local inbox's sightings hold."""
    text = str(entry.get("ETag") or entry.get("etag") or entry.get("LastModified") or entry.get("mtime") or "")
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def scan_object_inbox(
    db: ResultsDatabase,
    fs: AbstractFileSystem,
    root: str,
    *,
    read: ReadOptions = DEFAULT_READ,
    rules: InboxRules = DEFAULT_RULES,
    seen: Mapping[str, Sighting] | None = None,
    now: float | None = None,
) -> InboxScan:
    """Ingest the complete objects under ``root/<project>/`` (as many as ``rules`` allow), marked
    ones first, then oldest sighting first.

    Not by modification time as in the local inbox: fsspec listings have none common to every
    store (``LastModified`` on S3, ``mtime`` on ``file://``), while a sighting is this machine's
    clock. ``seen`` is what the previous scan returned in :attr:`InboxScan.seen` (a sensor cursor).
    """
    now = time.time() if now is None else now
    previous = seen or {}
    scan = InboxScan()
    fs.invalidate_cache()  # s3fs keeps listings: a poller must see new objects
    ready: list[tuple[float, str, str, str]] = []
    for folder in fs.ls(root, detail=True):
        project = folder["name"].rstrip("/").rsplit("/", 1)[-1]
        if folder["type"] != "directory" or project in ARCHIVE_FOLDERS or not PROJECT_NAME.match(project):
            continue
        entries = [e for e in fs.ls(folder["name"], detail=True) if e["type"] == "file"]
        names = {e["name"] for e in entries}
        for entry in entries:
            path, name = entry["name"], entry["name"].rsplit("/", 1)[-1]
            if is_partial_name(name):
                continue
            key = f"{project}/{name}"
            marker = path + DONE_SUFFIX
            size, stamp = int(entry.get("size") or 0), _stamp(entry)
            if rules.is_ready(scan, key, size, stamp, has_marker=marker in names, previous=previous, now=now):
                sighting = scan.seen.get(key)  # none for a marked object
                ready.append((sighting.since if sighting else 0.0, key, path, marker))

    def drop_marker(marker: str) -> None:
        if fs.exists(marker):
            fs.rm_file(marker)

    ready.sort(key=lambda entry: entry[:2])
    rules.take(
        scan,
        [(key, path, marker) for _, key, path, marker in ready],
        lambda path: _take(db, fs, root, path, read=read),
        drop_marker,
    )
    return scan


def _take(
    db: ResultsDatabase,
    fs: AbstractFileSystem,
    root: str,
    path: str,
    *,
    read: ReadOptions,
) -> InboxOutcome | None:
    """Download one object, judge it as the local inbox would, and move it; never raises."""
    project, name = path.rsplit("/", 2)[-2:]
    shown = Path(path)
    with tempfile.TemporaryDirectory(prefix="matching-inbox-") as folder:
        local = Path(folder) / project / name  # the batch records the object's own name
        local.parent.mkdir()
        try:
            fs.get_file(path, str(local))
        except FileNotFoundError:
            return None  # moved away by another worker since the listing: nothing lost
        except OSError as exc:
            return InboxOutcome(shown, project, note=f"left in the inbox: could not be downloaded ({type(exc).__name__})")
        verdict = judge_file(db, local, project, read=read)
    if verdict.unavailable:
        return InboxOutcome(shown, project, note=f"left in the inbox: the results database is unavailable ({verdict.unavailable})")
    if verdict.reason is not None:
        reason = verdict.reason.replace(str(local), path)
        try:
            moved = _move(fs, path, f"{root}/rejected/{project}", reason=reason)
        except OSError as move_error:
            return InboxOutcome(shown, project, error=reason, note=f"could not be moved aside: {type(move_error).__name__}")
        return InboxOutcome(shown, project, error=reason, moved_to=Path(moved))
    batch = verdict.batch
    assert batch is not None
    try:
        moved = _move(fs, path, f"{root}/processed/{project}", prefix=archive_prefix(batch))
    except OSError as move_error:  # stored all the same; the next scan sees a duplicate and moves it
        return InboxOutcome(shown, project, batch=batch, note=f"stored, but could not be archived: {type(move_error).__name__}")
    return InboxOutcome(shown, project, batch=batch, moved_to=Path(moved))


def _move(fs: AbstractFileSystem, path: str, folder: str, *, reason: str | None = None, prefix: str | None = None) -> str:
    """Move ``path`` into ``folder`` under a free archived name (and its reason beside it)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = path.rsplit("/", 1)[-1]
    target = f"{folder}/{archived_name(prefix or stamp, name)}"
    counter = 1
    while fs.exists(target):
        target = f"{folder}/{archived_name(f'{prefix or stamp}-{counter}', name)}"
        counter += 1
    fs.mv(path, target)
    if reason is not None:
        fs.pipe_file(target + ".reason.txt", (reason + "\n").encode("utf-8"))
    return target
