"""Resources for the systems outside the code: the results database and the catalog.

The OpenAI and search resources live beside the stages that use them (``ai.py``, ``search.py``).
"""


import functools
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
from fsspec import AbstractFileSystem

from matching_pipeline.clients.object_store import (
    is_url,
    join,
    object_name,
    object_stamp,
    open_store,
    publish_file,
    read_object,
    redact,
)
from matching_pipeline.core.catalog import CatalogIndex, IndexSettings
from matching_pipeline.core.readers import CATALOG, FieldLimits, InputError, ReadOptions, content_hash, read_table
from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.results.ingest import InboxRules
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import parse_column_map


@functools.lru_cache(maxsize=8)
def open_results_database(url: str) -> ResultsDatabase:
    """One engine (and connection pool) per URL per process, however many steps ask."""
    return ResultsDatabase(url)


class ResultsDatabaseResource(dg.ConfigurableResource):
    """The results database: SQLite file by default, Postgres via ``MATCHING_DATABASE_URL``,
    and the rule for which decisions written to it enter the review queue."""

    url: str
    review_confidence: float = ReviewSettings().confidence
    review_close_score: float = ReviewSettings().close_score

    def get(self) -> ResultsDatabase:
        return open_results_database(self.url)

    def review(self) -> ReviewSettings:
        return ReviewSettings(confidence=self.review_confidence, close_score=self.review_close_score)


class CatalogResource(dg.ConfigurableResource):
    """The reference catalog file and the content-addressed cache of its retrieval index.

    The index is built once per catalog version (the hash of the file's bytes, its encoding,
    column mapping and the index settings) and kept on disk, so every stage run loads it in about
    a second instead of refitting the vectoriser.

    The catalog is a local path or a URL (``s3://bucket/key.csv``, ``file:///...``), read through
    ``clients/object_store.py`` either way. Taking its version costs one metadata request (ETag or
    mtime, and size); the content is downloaded and hashed only when that stamp is new to this process.
    """

    path: str
    """The catalog's local path or URL (``MATCHING_CATALOG_PATH``)."""
    encoding: str = "utf-8"
    columns: str = ""
    index_dir: str
    """The local copy of the index (the embedded default, and every worker's cache)."""
    index_url: str = ""
    """Where every worker finds the index (``MATCHING_INDEX_URL``: ``s3://bucket/prefix``,
    ``file:///shared/index``); empty keeps it on this machine's disk only."""
    s3_endpoint_url: str = ""
    max_description_chars: int = FieldLimits().text
    max_field_chars: int = FieldLimits().field

    def version(self) -> str:
        """The content version of the catalog as it is now (a 16-hex-digit hash).

        Cheap while the catalog is unchanged: one metadata request, then the version remembered for
        that stamp. Raises ``FileNotFoundError`` / ``OSError`` naming the (redacted) location.
        """
        stamp = object_stamp(self.path, self.s3_endpoint_url)
        if stamp is None:  # the store tells neither ETag nor time: only the content can say
            return self._content_version(read_object(self.path, self.s3_endpoint_url))
        return _version_of(self.path, self.s3_endpoint_url, stamp, self.encoding, self.columns)

    def load_frame(self) -> pd.DataFrame:
        return self._read()[0]

    def _read(self) -> tuple[pd.DataFrame, str]:
        """The catalog's frame and the version of the very bytes it was parsed from."""
        data = read_object(self.path, self.s3_endpoint_url)
        return _parse_catalog(self.path, data, self.read_options()), self._content_version(data)

    def _content_version(self, data: bytes) -> str:
        return _content_version(data, self.encoding, self.columns)

    def read_options(self) -> ReadOptions:
        """How the catalog is read, wherever it lives (the same options as for a local file)."""
        limits = FieldLimits(text=self.max_description_chars, field=self.max_field_chars)
        return ReadOptions(encoding=self.encoding, columns=parse_column_map(self.columns), limits=limits)

    def shown_location(self) -> str:
        """The catalog's location fit for metadata and logs (a URL without user info or query)."""
        return redact(self.path)

    def catalog_ids(self) -> frozenset[str]:
        """Every catalog id of the catalog as it is now (to check ids a person typed), read once
        per catalog version and process."""
        version = self.version()
        with _index_lock:
            ids = _catalog_ids.get(version)
        if ids is None:
            ids = frozenset(str(i) for i in self.load_frame()["catalog_id"])
            with _index_lock:
                _catalog_ids.clear()
                _catalog_ids[version] = ids
        return ids

    def index_path(self, version: str) -> Path:
        return Path(self.index_dir) / f"catalog-{version}.pkl"

    def index_location(self, version: str) -> str:
        """Where the index of ``version`` is shared: its object URL, or the local file."""
        if not self.index_url:
            return str(self.index_path(version))
        return self.index_url.rstrip("/") + "/" + self.index_path(version).name

    def load_index(self) -> tuple[CatalogIndex, bool]:
        """The index of the catalog as it is now, and whether this call had to build it.

        Looked for in this process's memory, then on local disk, then in the shared store
        (``index_url``), and built only when none has it; a built or local-only index is
        published to the shared store, so the next worker on an empty disk downloads it instead
        of refitting for a minute. Every copy read is checked to be the version asked for.
        """
        version = self.version()
        with _index_lock:
            cached = _loaded_indexes.get(version)
            if cached is not None:
                return cached, False
            target = self.index_path(version)
            index = _read_index(target, version)
            store = open_store(self.index_url, self.s3_endpoint_url) if self.index_url else None
            key = join(store[1], target.name) if store else ""
            fetched_bad = False
            if index is None and store is not None and store[0].exists(key):
                _download(store[0], key, target)
                index = _read_index(target, version)
                fetched_bad = index is None  # unreadable or another version: replace it below
            built = index is None
            if index is None:
                frame, read_version = self._read()
                if read_version != version:  # replaced since its version was taken: name what was read
                    version, target = read_version, self.index_path(read_version)
                    key = join(store[1], target.name) if store else ""
                index = CatalogIndex.build(frame, IndexSettings(), version=version)
                _write_atomically(target, index.save)
            if store is not None:
                publish_file(store[0], str(target), key, replace=fetched_bad)
            _loaded_indexes.clear()  # keep one catalog version in memory, not every old one
            _loaded_indexes[version] = index
            return index, built


def _read_index(path: Path, version: str) -> CatalogIndex | None:
    """The index at ``path`` if it is there, readable and of ``version``; else None (rebuild)."""
    if not path.exists():
        return None
    try:
        index = CatalogIndex.load(path)
    except Exception:  # noqa: BLE001 - truncated, foreign or old-format file: a rebuild replaces it
        return None
    return index if index.version == version else None


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write then rename, so a concurrent run never loads half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _download(fs: AbstractFileSystem, key: str, target: Path) -> None:
    _write_atomically(target, lambda tmp: fs.get_file(key, str(tmp)))


_index_lock = threading.Lock()
_loaded_indexes: dict[str, CatalogIndex] = {}
_catalog_ids: dict[str, frozenset[str]] = {}


@functools.lru_cache(maxsize=32)
def _version_of(location: str, endpoint_url: str, _stamp: tuple[str, int], encoding: str, columns: str) -> str:
    """The content version of ``location`` while its stamp (ETag or mtime, and size) is ``_stamp``.

    The stamp is part of the cache key only: the version itself is the content hash, so identical
    bytes uploaded again (a new stamp) give the same version, at the cost of one download.
    """
    return _content_version(read_object(location, endpoint_url), encoding, columns)


def _content_version(data: bytes, encoding: str, columns: str) -> str:
    return content_hash(data + f"|{encoding}|{columns}|{IndexSettings().fingerprint()}".encode())[:16]


def _parse_catalog(location: str, data: bytes, read: ReadOptions) -> pd.DataFrame:
    """Parse catalog bytes; an :class:`InputError` names the catalog's path, or its (redacted) URL."""
    name = object_name(location) if is_url(location) else location
    try:
        return read_table(name, CATALOG, columns=read.columns, encoding=read.encoding, data=data, limits=read.limits)
    except InputError as exc:  # its message starts "<name>: rejected"; name the whole URL instead
        if name != location:
            exc.args = (str(exc).replace(name, redact(location), 1),)
        raise


class InboxResource(dg.ConfigurableResource):
    """Where item files arrive (``<inbox_dir>/<project>/``) and how they are read."""

    inbox_dir: str
    data_dir: str
    encoding: str = "utf-8"
    columns: str = ""
    max_description_chars: int = FieldLimits().text
    max_field_chars: int = FieldLimits().field
    settle_seconds: float = 2.0
    """A file without a ``.done`` marker is taken at the first scan this long after one that saw the
    same size and mtime (``MATCHING_INBOX_SETTLE_SECONDS``)."""
    require_done: bool = False
    url: str = ""
    """An object-store inbox besides the folder (``MATCHING_INBOX_URL``; ``object_inbox.py``)."""
    s3_endpoint_url: str = ""

    def read_options(self) -> ReadOptions:
        limits = FieldLimits(text=self.max_description_chars, field=self.max_field_chars)
        return ReadOptions(encoding=self.encoding, columns=parse_column_map(self.columns), limits=limits)

    def rules(self) -> InboxRules:
        """When a file is complete enough to take: one object for both inbox sensors, so the folder
        and the object store follow the same settings."""
        return InboxRules(settle_seconds=self.settle_seconds, require_done=self.require_done)
