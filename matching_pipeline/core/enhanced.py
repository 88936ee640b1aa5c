"""The enhanced stage: offline matching by identifiers, then by guarded text similarity.

Rules run from the most to the least certain evidence, and the first that accepts decides:

1. ``gtin``: the item's GTIN names exactly one catalog entry.
2. ``part_number`` / ``manufacturer_part_number``: its part number names one entry, directly or
   once the manufacturer breaks a tie.
3. ``model_number``: model numbers in its description name one entry, each unique in the catalog.
4. ``fuzzy``: the best of the top-k TF-IDF candidates, re-scored with rapidfuzz, is clearly
   ahead of the runner-up.

Every accept must also pass :func:`~matching_pipeline.core.identifiers.find_conflict`, because
near-identical titles of different variants are exactly where text and even model-number
evidence mislead. What is not accepted leaves with its candidates for the AI stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from rapidfuzz import fuzz, process

from matching_pipeline.core.attributes import active_vocabulary, register_makers
from matching_pipeline.core.catalog import CatalogIndex, document_text
from matching_pipeline.core.identifiers import extract_features, find_conflict
from matching_pipeline.core.models import REQUIRED_ITEM_FIELDS, Candidate, Decision
from matching_pipeline.core.normalize import is_missing

IDENTIFIER_CONFIDENCE: dict[str, float] = {
    "gtin": 1.0,
    "part_number": 0.97,
    "manufacturer_part_number": 0.97,
    "model_number": 0.95,
}
"""Confidence of identifier accepts, ordered by how specific the identifier is. A unique model
number in the title was right 99% of the time on Abt-Buy; a GTIN is checked by its check digit."""


@dataclass(frozen=True)
class EnhancedSettings:
    """Knobs of the enhanced stage, named after Splink's thresholds.

    The fuzzy accept is a two-sided test: a score high enough to be a match
    (``threshold_match_score``) and far enough ahead of the runner-up (``threshold_margin``)
    that the catalog holds no near twin. The margin is what transfers across data sets:
    thresholds tuned for precision 0.99 on one benchmark gave 0.65 on another whose titles
    differ by version or pack size, and such catalogs are precisely the ones where the
    runner-up sits close behind.
    """

    top_k: int = 10
    """Candidates kept per unmatched item for the next stage."""
    top_k_matched: int = 3
    """Candidates kept per matched item: the match and its nearest rivals, for a reviewer. No
    later stage reads them, and at scale they were most of what the stage wrote."""
    rescore_k: int = 20
    """TF-IDF neighbours re-scored per item before the best ``top_k`` are kept. Re-scoring a
    few more than are kept lets numbers lift an entry that n-grams ranked just below the cut
    (on Abt-Buy, recall@10 goes from 0.986 to 0.991) at the cost of k pair scores, not a cross product."""
    threshold_match_score: float = 0.5
    """Minimum re-scored similarity (0..1) of a fuzzy accept."""
    threshold_margin: float = 0.15
    """Minimum lead of the best candidate over the runner-up for a fuzzy accept. On Abt-Buy a
    margin of 0.1 already gives overall precision 0.99, but fuzzy accepts alone only 0.966;
    0.15 lifts them to 0.985 for 4% less coverage, the safer side where variants sit close."""
    weight_tfidf: float = 0.8
    """Weight of the character n-gram cosine: the best single ranker of product titles."""
    weight_token_set: float = 0.1
    """Weight of rapidfuzz ``token_set_ratio``: a word-level view indifferent to word order and
    extra words, so a title padded with marketing text is not penalised twice."""
    weight_numbers: float = 0.1
    """Weight of the share of the item's number-bearing words found in the entry. Sizes,
    capacities and model digits are the words that tell products apart, and short tokens
    carry few n-grams, so cosine alone undervalues them."""
    threshold_verify_score: float = 0.7
    """Fuzzy accepts scoring below this are flagged ``verify``: with a model configured the AI
    stage confirms or rejects them, without one they enter the review queue. Identifier accepts
    are never flagged. On Abt-Buy about a quarter of fuzzy accepts fall below 0.7."""
    check_conflicts: bool = True
    """Refuse accepts whose listings disagree on maker, model number, version, edition, pack
    size, colour, measures, platform, condition or accessory/bundle markers (see
    :mod:`matching_pipeline.core.attributes`). Switch off only to measure what the checks cost."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError("top_k must be at least 1")
        if not 1 <= self.top_k_matched <= self.top_k:
            raise ValueError("top_k_matched must be between 1 and top_k")
        if self.rescore_k < self.top_k:
            raise ValueError("rescore_k must be at least top_k")
        weights = (self.weight_tfidf, self.weight_token_set, self.weight_numbers)
        if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-9:
            raise ValueError("weights must be non-negative and sum to 1")


def _cell(row: dict[str, Any], name: str) -> Any:
    value = row.get(name)
    return None if is_missing(value) else value


@dataclass(frozen=True)
class _Hit:
    """Catalog entries an identifier of the item points to; decisive only when unique."""

    method: str
    identifier: str
    ids: list[str]


def _identifier_hits(item: dict[str, Any], text: str, index: CatalogIndex) -> list[_Hit]:
    """Identifier hits from the most to the least specific; empty lookups are left out."""
    gtin, part, maker = _cell(item, "gtin"), _cell(item, "part_number"), _cell(item, "manufacturer")
    hits = []
    if gtin is not None:
        hits.append(_Hit("gtin", str(gtin), index.find_by_gtin(gtin)))
    if part is not None:
        hits.append(_Hit("part_number", str(part), index.find_by_part_number(part)))
        if maker is not None and len(hits[-1].ids) > 1:
            hits.append(_Hit("manufacturer_part_number", str(part), index.find_by_part_number(part, maker)))
    tokens = extract_features(text).model_numbers
    unique = {t: ids for t in tokens if (ids := index.find_by_model_number(t))}
    hits.append(_Hit("model_number", ",".join(unique), list(dict.fromkeys(i for ids in unique.values() for i in ids))))
    if not unique:
        # Candidates only: a family hit ("CLI8" -> "CLI8R", "CLI8B") never decides alone.
        family = (i for t in tokens for i in index.find_by_model_family(t))
        hits.append(_Hit("model_family", ",".join(tokens), list(dict.fromkeys(family))))
    return [h for h in hits if h.ids]


def _pinned_ids(hits: list[_Hit], k: int) -> list[str]:
    """Identifier hits to keep among the candidates, decisive ones first, at most ``k``."""
    ordered = sorted(hits, key=lambda h: len(h.ids) != 1)
    return list(dict.fromkeys(i for h in ordered for i in h.ids))[:k]


_DIGIT = re.compile(r"\d")


@lru_cache(maxsize=200_000)
def _numbers(text: str) -> frozenset[str]:
    """The words of ``text`` that contain a digit (a split, not a regex: linear on any input)."""
    return frozenset(word for word in text.split() if _DIGIT.search(word))


def _share_of_numbers(query: str, entry: str) -> float:
    mine = _numbers(query)
    return len(mine & _numbers(entry)) / len(mine) if mine else 0.0


def _rescore(
    queries: list[str], candidates: list[list[Candidate]], index: CatalogIndex, settings: EnhancedSettings
) -> list[list[Candidate]]:
    """Re-score each item's own candidates, best first, with one vectorised rapidfuzz call."""
    pairs_query = [q for q, found in zip(queries, candidates, strict=True) for _ in found]
    pairs_entry = [index.text(c.catalog_id) for found in candidates for c in found]
    token_set = process.cpdist(pairs_query, pairs_entry, scorer=fuzz.token_set_ratio, workers=-1) / 100.0
    cosine = np.fromiter((c.score for found in candidates for c in found), dtype=float, count=len(pairs_entry))
    numbers = np.fromiter(map(_share_of_numbers, pairs_query, pairs_entry), dtype=float, count=len(pairs_entry))
    blended = settings.weight_tfidf * cosine + settings.weight_token_set * token_set + settings.weight_numbers * numbers
    blended = np.clip(blended, 0.0, 1.0)
    # The candidates were made for this call by retrieval: re-score them in place.
    for candidate, score in zip((c for found in candidates for c in found), blended.round(6).tolist(), strict=True):
        candidate.score = score
    return [sorted(found, key=lambda c: -c.score) for found in candidates]


def _entry_text(candidate: Candidate) -> str:
    return " - ".join(v for v in (candidate.description, candidate.part_number) if v)


EVIDENCE_IDS_LISTED = 10
"""Catalog ids an identifier hit lists in the evidence; a family token such as "GEN3" can point
to hundreds of entries, and the count says as much as the list."""


def _hit_evidence(hit: _Hit) -> dict[str, Any]:
    listed: dict[str, Any] = {"rule": hit.method, "identifier": hit.identifier}
    listed["catalog_ids"] = hit.ids[:EVIDENCE_IDS_LISTED]
    if len(hit.ids) > EVIDENCE_IDS_LISTED:
        listed["catalog_id_count"] = len(hit.ids)
    return listed


def _kept(chosen: Candidate, saved: list[Candidate], settings: EnhancedSettings) -> list[Candidate]:
    """A matched item's candidates: the match first, then its nearest rivals."""
    return [chosen, *(c for c in saved if c.catalog_id != chosen.catalog_id)][: settings.top_k_matched]


def _decide(
    item_id: str,
    text: str,
    maker: str | None,
    hits: list[_Hit],
    ranked: list[Candidate],
    settings: EnhancedSettings,
) -> Decision:
    """Apply the rules to one item whose candidates are already re-scored and ranked.

    ``maker`` is the item's own (canonical) manufacturer field, when it has one."""
    best = ranked[0].score if ranked else 0.0
    runner_up = ranked[1].score if len(ranked) > 1 else 0.0
    evidence: dict[str, Any] = {"best_score": best, "runner_up_score": runner_up, "margin": round(best - runner_up, 6)}
    by_id = {c.catalog_id: c for c in ranked}
    features = extract_features(text)
    vocabulary = active_vocabulary()

    def conflict(candidate: Candidate, *, by_identifier: bool = False) -> str | None:
        if not settings.check_conflicts:
            return None
        makers = (maker, vocabulary.canonical_maker(candidate.manufacturer))
        return find_conflict(features, _entry_text(candidate), unstated_quantity_is_one=not by_identifier, makers=makers)

    if ranked:
        evidence["best_catalog_id"] = ranked[0].catalog_id
        if (best_conflict := conflict(ranked[0])) is not None:
            evidence["conflict"] = best_conflict

    pinned = _pinned_ids(hits, settings.top_k)
    saved = [by_id[i] for i in pinned] + [c for c in ranked if c.catalog_id not in pinned]
    saved = saved[: max(settings.top_k, len(pinned))]
    if hits:
        evidence["identifiers"] = [_hit_evidence(h) for h in hits]

    decisive = next((h for h in hits if len(h.ids) == 1 and h.method in IDENTIFIER_CONFIDENCE), None)
    if decisive is not None:
        chosen = by_id[decisive.ids[0]]
        reason = conflict(chosen, by_identifier=True)
        if reason is None:
            evidence.update(rule=decisive.method, identifier=decisive.identifier, score=chosen.score)
            confidence = max(IDENTIFIER_CONFIDENCE[decisive.method], chosen.score)
            return Decision(item_id, chosen.catalog_id, decisive.method, confidence, evidence, _kept(chosen, saved, settings))
        evidence.update(identifier_conflict=reason, blocked=True)

    if not ranked:
        evidence["rejected"] = "no candidates"
    elif best < settings.threshold_match_score:
        evidence["rejected"] = "below threshold_match_score"
    elif best - runner_up < settings.threshold_margin:
        evidence["rejected"] = "below threshold_margin"
    elif "conflict" in evidence:
        evidence.update(rejected="conflict", blocked=True)
    else:
        evidence.update(rule="fuzzy", score=best, verify=best < settings.threshold_verify_score)
        return Decision(item_id, ranked[0].catalog_id, "fuzzy", best, evidence, _kept(ranked[0], saved, settings))
    evidence["rule"] = None
    return Decision(item_id, None, "none", best, evidence, saved)


def match_enhanced(items: pd.DataFrame, index: CatalogIndex, settings: EnhancedSettings = EnhancedSettings()) -> list[Decision]:
    """One Decision per row of ``items``, in input order (see the module docstring for the rules).

    Retrieval runs once for all items; rapidfuzz re-scores only each item's own candidates.
    Candidates always travel with the decision, matched or not, with identifier hits first
    (even when retrieval missed them), so the next stage never has to search again.
    """
    missing = [c for c in REQUIRED_ITEM_FIELDS if c not in items.columns]
    if missing:
        raise ValueError(f"items lack required columns: {missing}")
    rows = items.to_dict("records")
    register_makers(index.manufacturers)
    if "manufacturer" in items.columns:
        register_makers(items["manufacturer"].dropna().unique())
    vocabulary = active_vocabulary()
    makers = [vocabulary.canonical_maker(_cell(r, "manufacturer")) for r in rows]
    texts = [" - ".join(str(v) for v in (_cell(r, "description"), _cell(r, "part_number")) if v is not None) for r in rows]
    queries = [document_text(t) for t in texts]
    hits = [_identifier_hits(r, t, index) for r, t in zip(rows, texts, strict=True)]
    pinned = [_pinned_ids(item_hits, settings.top_k) for item_hits in hits]
    retrieved = index.retrieve(queries, settings.rescore_k, include=pinned)
    ranked = _rescore(queries, retrieved, index, settings)
    return [
        _decide(str(r["item_id"]), t, m, h, c, settings)
        for r, t, m, h, c in zip(rows, texts, makers, hits, ranked, strict=True)
    ]
