"""Resources for the systems outside the code: the results database and the catalog.

The OpenAI and search resources live beside the stages that use them (``ai.py``, ``search.py``).
"""


import functools
import os
import tempfile
import threading
from pathlib import Path

import dagster as dg
import pandas as pd

from matching_pipeline.core.catalog import CatalogIndex, IndexSettings
from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.core.readers import CATALOG, FieldLimits, content_hash, read_table
from matching_pipeline.settings import parse_column_map
from matching_pipeline.results.store import ResultsDatabase


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
    """

    path: str
    encoding: str = "utf-8"
    columns: str = ""
    index_dir: str
    max_description_chars: int = FieldLimits().text
    max_field_chars: int = FieldLimits().field

    def version(self) -> str:
        path = Path(self.path)
        stat = path.stat()
        return _version_of(str(path), stat.st_mtime_ns, stat.st_size, self.encoding, self.columns)

    def load_frame(self) -> pd.DataFrame:
        return read_table(
            self.path,
            CATALOG,
            columns=parse_column_map(self.columns),
            encoding=self.encoding,
            limits=FieldLimits(text=self.max_description_chars, field=self.max_field_chars),
        )

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

    def load_index(self) -> tuple[CatalogIndex, bool]:
        """The index of the catalog as it is now, and whether this call had to build it."""
        version = self.version()
        with _index_lock:
            cached = _loaded_indexes.get(version)
            if cached is not None:
                return cached, False
            target = self.index_path(version)
            built = not target.exists()
            if built:
                index = CatalogIndex.build(self.load_frame(), IndexSettings(), version=version)
                target.parent.mkdir(parents=True, exist_ok=True)
                # Write then rename, so a concurrent run never loads half a file.
                fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
                os.close(fd)
                index.save(Path(tmp))
                os.replace(tmp, target)
            else:
                index = CatalogIndex.load(target)
            _loaded_indexes.clear()  # keep one catalog version in memory, not every old one
            _loaded_indexes[version] = index
            return index, built


_index_lock = threading.Lock()
_loaded_indexes: dict[str, CatalogIndex] = {}
_catalog_ids: dict[str, frozenset[str]] = {}


@functools.lru_cache(maxsize=32)
def _version_of(path: str, _mtime_ns: int, _size: int, encoding: str, columns: str) -> str:
    # mtime and size are part of the cache key only: the version itself is the content hash.
    digest = content_hash(
        Path(path).read_bytes() + f"|{encoding}|{columns}|{IndexSettings().fingerprint()}".encode()
    )
    return digest[:16]


class InboxResource(dg.ConfigurableResource):
    """Where item files arrive (``<inbox_dir>/<project>/``) and how they are read."""

    inbox_dir: str
    data_dir: str
    encoding: str = "utf-8"
    columns: str = ""
    max_description_chars: int = FieldLimits().text
    max_field_chars: int = FieldLimits().field
    settle_seconds: float = 5.0
    """A file without a ``.done`` marker is taken once its size and mtime held this long."""
    require_done: bool = False

    def field_limits(self) -> FieldLimits:
        return FieldLimits(text=self.max_description_chars, field=self.max_field_chars)
