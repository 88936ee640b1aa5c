"""The catalog index: everything the matcher needs from one catalog version, built once.

Fitting the n-gram vectoriser on 50,000 entries takes seconds, so the index is built when the
catalog changes (the caller versions it by content hash) and loaded by every run after that.
It holds two kinds of lookups: exact identifier maps (GTIN, part number, manufacturer + part
number, model-number tokens) and a TF-IDF matrix for similarity retrieval.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sparse_dot_topn import sp_matmul_topn

from matching_pipeline.core.identifiers import MAX_VARIANT_SUFFIX, MIN_MODEL_NUMBER_LENGTH, extract_model_numbers
from matching_pipeline.core.models import REQUIRED_CATALOG_FIELDS, Candidate
from matching_pipeline.core.normalize import (
    is_missing,
    normalize_gtin,
    normalize_manufacturer,
    normalize_part_number,
    normalize_text,
)

if TYPE_CHECKING:
    # scikit-learn (and the scipy.stats it imports) costs about a second of start-up. Only building
    # an index needs it here (unpickling a saved one imports it by itself), so the processes that
    # never touch the index (the AI and web-search run workers, the API, status) do not pay it.
    from sklearn.feature_extraction.text import TfidfVectorizer

_FORMAT = 1
"""Bumped when the pickled layout changes, so an old file fails loudly instead of half-loading."""


@dataclass(frozen=True)
class IndexSettings:
    """How the similarity index is built.

    Defaults are the measured best cheap retriever on product titles (GUIDE section 6):
    character n-grams within word boundaries, 2 to 4 long, survive the separators, typos and
    run-together model numbers that word tokens miss; sublinear tf stops a repeated word from
    dominating a title; float32 halves memory at no measurable loss of ranking.
    """

    ngram_range: tuple[int, int] = (2, 4)
    min_df: int = 1
    max_df: int | float = 2_500
    """N-grams found in more entries than this (a count, or a share if a float) are dropped.
    They are word-boundary bigrams such as "e " that nearly every title has: their idf is low,
    so they barely move a cosine, yet they make every query touch every entry. A count rather
    than a share, because the cost grows with the count: small catalogs keep every n-gram, and
    at 50,000 entries retrieval of 21,737 queries drops from about 70 s to about 6 s."""
    sublinear_tf: bool = True

    def fingerprint(self) -> str:
        """Short stable hash: part of the index version so a settings change rebuilds it."""
        payload = json.dumps({"format": _FORMAT, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _column(frame: pd.DataFrame, name: str) -> list[Any]:
    return frame[name].tolist() if name in frame.columns else [None] * len(frame)


def _optional_str(value: Any) -> str | None:
    return None if is_missing(value) else str(value)


def document_text(description: Any, manufacturer: Any = None, part_number: Any = None) -> str:
    """The text compared by similarity: an item's query and a catalog entry are built alike."""
    return normalize_text(" ".join(str(v) for v in (manufacturer, description, part_number) if not is_missing(v)))


def _group(pairs: Iterable[tuple[Any, str]]) -> dict[Any, tuple[str, ...]]:
    grouped: dict[Any, list[str]] = defaultdict(list)
    for key, catalog_id in pairs:
        if key is not None and catalog_id not in grouped[key]:
            grouped[key].append(catalog_id)
    return {key: tuple(ids) for key, ids in grouped.items()}


class CatalogIndex:
    """Retrieval and identifier lookups over one catalog version. Build with :meth:`build`."""

    def __init__(
        self,
        catalog: pd.DataFrame,
        vectorizer: TfidfVectorizer,
        matrix_t: sp.csr_matrix,
        texts: list[str],
        maps: dict[str, dict[Any, tuple[str, ...]]],
        settings: IndexSettings,
        version: str,
    ) -> None:
        self.catalog = catalog
        self.settings = settings
        self.version = version
        self._vectorizer = vectorizer
        self._matrix_t = matrix_t  # features x entries, CSR: the layout sp_matmul_topn multiplies fastest
        self._texts = texts
        self._maps = maps
        self._ids: list[str] = catalog["catalog_id"].tolist()
        self._position = {catalog_id: i for i, catalog_id in enumerate(self._ids)}
        self._descriptions = [str(v) for v in catalog["description"].tolist()]
        self._part_numbers = [_optional_str(v) for v in _column(catalog, "part_number")]
        self._manufacturers = [_optional_str(v) for v in _column(catalog, "manufacturer")]
        self.manufacturers: frozenset[str] = frozenset(m for m in self._manufacturers if m)
        """The distinct manufacturer values of the catalog (what its titles may lead with)."""

    @classmethod
    def build(cls, catalog: pd.DataFrame, settings: IndexSettings = IndexSettings(), version: str = "") -> CatalogIndex:
        """Fit the vectoriser and the identifier maps on ``catalog`` (canonical columns)."""
        missing = [c for c in REQUIRED_CATALOG_FIELDS if c not in catalog.columns]
        if missing:
            raise ValueError(f"catalog lacks required columns: {missing}")
        catalog = catalog.reset_index(drop=True).assign(catalog_id=lambda f: f["catalog_id"].astype(str))
        duplicated = catalog["catalog_id"][catalog["catalog_id"].duplicated()].unique().tolist()
        if duplicated:
            raise ValueError(f"catalog_id must be unique; repeated: {duplicated[:5]}")

        ids = catalog["catalog_id"].tolist()
        descriptions = _column(catalog, "description")
        manufacturers = _column(catalog, "manufacturer")
        part_numbers = _column(catalog, "part_number")
        texts = [document_text(d, m, p) for d, m, p in zip(descriptions, manufacturers, part_numbers, strict=True)]

        from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: PLC0415 - see TYPE_CHECKING above

        vectorizer = TfidfVectorizer(
            analyzer="char_wb",
            ngram_range=settings.ngram_range,
            min_df=settings.min_df,
            max_df=settings.max_df,
            sublinear_tf=settings.sublinear_tf,
            dtype=np.float32,
            lowercase=False,  # texts are already normalised
        )
        matrix = vectorizer.fit_transform(texts)
        vectorizer.stop_words_ = None  # only kept for introspection; large and useless once fitted

        norm_parts = [normalize_part_number(p) for p in part_numbers]
        norm_manufacturers = [normalize_manufacturer(m) for m in manufacturers]
        model_tokens = (
            (token, catalog_id)
            for d, p, catalog_id in zip(descriptions, part_numbers, ids, strict=True)
            for token in extract_model_numbers(" - ".join(str(v) for v in (d, p) if not is_missing(v)))
        )
        maps = {
            "gtin": _group((normalize_gtin(g), i) for g, i in zip(_column(catalog, "gtin"), ids, strict=True)),
            "part_number": _group(zip(norm_parts, ids, strict=True)),
            "manufacturer_part_number": _group(
                ((m, p) if m and p else None, i) for m, p, i in zip(norm_manufacturers, norm_parts, ids, strict=True)
            ),
            "model_number": _group(model_tokens),
        }
        maps["model_prefix"] = _group(
            (token[: len(token) - cut], i)
            for token, found in maps["model_number"].items()
            for cut in range(1, MAX_VARIANT_SUFFIX + 1)
            if len(token) - cut >= MIN_MODEL_NUMBER_LENGTH
            for i in found
        )
        return cls(catalog, vectorizer, matrix.T.tocsr(), texts, maps, settings, version)

    def __len__(self) -> int:
        return len(self._ids)

    # -- identifier lookups -------------------------------------------------------------

    def find_by_gtin(self, gtin: Any) -> list[str]:
        """Entries carrying this GTIN (any of EAN-8, UPC-A, EAN-13, GTIN-14); [] if invalid."""
        return list(self._maps["gtin"].get(normalize_gtin(gtin), ()))

    def find_by_part_number(self, part_number: Any, manufacturer: Any = None) -> list[str]:
        """Entries with this part number, restricted to ``manufacturer`` when one is given."""
        part = normalize_part_number(part_number)
        if is_missing(manufacturer):
            return list(self._maps["part_number"].get(part, ()))
        key = (normalize_manufacturer(manufacturer), part)
        return list(self._maps["manufacturer_part_number"].get(key, ()))

    def find_by_model_number(self, token: str) -> list[str]:
        """The one entry whose title or part number carries this model number, else [].

        A token shared by several entries ("HD15" in every VGA cable) identifies nothing, so
        only tokens unique in the catalog are answered.
        """
        ids = self._maps["model_number"].get(normalize_part_number(token), ())
        return list(ids) if len(ids) == 1 else []

    def find_by_model_family(self, token: str) -> list[str]:
        """Entries whose model numbers equal ``token`` up to a short variant suffix, either way.

        "CLI8" finds "CLI8R" and "CLI8B"; "FS105NA" finds "FS105". Too loose to decide a match
        (the suffix is often the colour or region that tells variants apart), but it puts the
        right family in front of whoever decides.
        """
        model = normalize_part_number(token) or ""
        shorter = (model[: len(model) - cut] for cut in range(MAX_VARIANT_SUFFIX + 1))
        keys = [k for k in shorter if len(k) >= MIN_MODEL_NUMBER_LENGTH]
        found = [i for k in keys for i in self._maps["model_number"].get(k, ())]
        found += self._maps["model_prefix"].get(model, ())
        return list(dict.fromkeys(found))

    def find_by_identifier(self, token: str) -> list[str]:
        """Follow an identifier of unknown kind (say, read from a web page) to the catalog.

        Tried from the most to the least specific: GTIN, part number, unique model number.
        """
        return self.find_by_gtin(token) or self.find_by_part_number(token) or self.find_by_model_number(token)

    # -- similarity -----------------------------------------------------------------------

    def retrieve(
        self,
        texts: Sequence[str],
        k: int,
        include: Sequence[Sequence[str]] | None = None,
        n_threads: int | None = None,
    ) -> list[list[Candidate]]:
        """Top-``k`` entries by cosine similarity for every text, best first, in one sparse product.

        ``include[i]`` names entries to score for text ``i`` even when they are not among its
        top ``k`` (identifier hits that n-grams rank low); they follow the top ``k``, scored the
        same way. Texts are raw (they are normalised here, as the catalog was); an empty text
        gets [] plus its included entries.
        """
        if not texts or not self._ids:
            return [[] for _ in texts]
        query = self._vectorizer.transform([normalize_text(t) for t in texts])
        scores = sp_matmul_topn(
            query, self._matrix_t, top_n=min(k, len(self._ids)), sort=True, n_threads=n_threads or os.cpu_count()
        ).tocsr()
        indptr, indices = scores.indptr, scores.indices.tolist()
        data = np.clip(scores.data, 0.0, 1.0).tolist()
        found = [
            list(zip(indices[a:b], data[a:b], strict=True)) for a, b in zip(indptr[:-1], indptr[1:], strict=True)
        ]
        if include is not None:
            self._score_included(query, found, include)
        return [[self._candidate_at(j, s) for j, s in pairs] for pairs in found]

    def _score_included(
        self, query: sp.csr_matrix, found: list[list[tuple[int, float]]], include: Sequence[Sequence[str]]
    ) -> None:
        """Append each text's included entries that retrieval missed, all scored in one product."""
        rows, positions = [], []
        for row, (pairs, wanted) in enumerate(zip(found, include, strict=True)):
            present = {j for j, _ in pairs}
            for catalog_id in wanted:
                position = self._position[catalog_id]
                if position not in present:
                    present.add(position)
                    rows.append(row)
                    positions.append(position)
        for row, position, score in zip(rows, positions, self._pair_scores(query, rows, positions), strict=True):
            found[row].append((position, score))

    def similarity(self, text: str, catalog_ids: Sequence[str]) -> list[float]:
        """Cosine similarity of one text to given entries, scored as :meth:`retrieve` scores them."""
        query = self._vectorizer.transform([normalize_text(text)])
        return self._pair_scores(query, [0] * len(catalog_ids), [self._position[i] for i in catalog_ids])

    def _pair_scores(self, query: sp.csr_matrix, rows: list[int], positions: list[int]) -> list[float]:
        """Cosine of query row ``rows[n]`` and entry ``positions[n]``, for every n."""
        if not rows:
            return []
        products = self._entry_rows[positions].multiply(query[rows]).sum(axis=1)
        return np.clip(np.asarray(products).ravel(), 0.0, 1.0).tolist()

    @functools.cached_property
    def _entry_rows(self) -> sp.csr_matrix:
        """Entries x features, CSR: picking a few entries' rows is cheap here, while picking
        columns of the retrieval layout scans the whole matrix on every call."""
        return self._matrix_t.T.tocsr()

    # -- entries --------------------------------------------------------------------------

    def entry(self, catalog_id: str) -> dict[str, Any]:
        """The catalog row as given to :meth:`build`, all columns included."""
        return self.catalog.iloc[self._position[catalog_id]].to_dict()

    def text(self, catalog_id: str) -> str:
        """The normalised text the index compares for this entry (for re-scoring)."""
        return self._texts[self._position[catalog_id]]

    def candidate(self, catalog_id: str, score: float) -> Candidate:
        return self._candidate_at(self._position[catalog_id], score)

    def _candidate_at(self, position: int, score: float) -> Candidate:
        return Candidate(
            catalog_id=self._ids[position],
            score=score,
            description=self._descriptions[position],
            part_number=self._part_numbers[position],
            manufacturer=self._manufacturers[position],
        )

    # -- persistence ----------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the fitted index to one file; :meth:`load` restores it without refitting."""
        state = {
            "format": _FORMAT,
            "catalog": self.catalog,
            "vectorizer": self._vectorizer,
            "matrix_t": self._matrix_t,
            "texts": self._texts,
            "maps": self._maps,
            "settings": self.settings,
            "version": self.version,
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            pickle.dump(state, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def load(cls, path: str | Path) -> CatalogIndex:
        """Read an index written by :meth:`save` (trusted files only: this unpickles)."""
        with open(path, "rb") as handle:
            state = pickle.load(handle)
        if state.get("format") != _FORMAT:
            raise ValueError(f"{path}: index format {state.get('format')!r}, expected {_FORMAT}; rebuild it")
        del state["format"]
        return cls(**state)
