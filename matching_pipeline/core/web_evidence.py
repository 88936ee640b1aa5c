"""From web search results to a catalog entry, accepting only what the evidence pins down.

Web pages are untrusted text. A result never names a catalog entry directly: identifiers read
from it (GTINs, model and part numbers in its title, snippet and URL path) are looked up in the
catalog index, exactly as an item's own identifiers are. A match is then accepted only when

1. the result is about *this* item (it carries the item's part number, GTIN or a model number of
   its description, or most of the words of its description),
2. exactly one catalog entry is supported by such results, by at least
   ``min_supporting_results`` of them, and no identifier in them points at another entry,
3. the entry does not contradict the item (model number, version, edition, pack size, capacity
   or size, via :func:`~matching_pipeline.core.identifiers.find_conflict`; or a different
   manufacturer), and
4. the catalog itself corroborates it: the entry was among the item's earlier candidates or
   resembles the item's text (TF-IDF cosine at least ``min_catalog_similarity``).

So a snippet that gives instructions changes nothing (instructions are not identifiers), a
fake identifier finds no entry, and a real identifier of an unrelated entry planted in a page
that imitates the item fails the catalog's corroboration (4) or conflicts with a genuine
result (2).

When several entries are supported (2 fails), a model may be asked to choose (see
:func:`confirmation_question`): it sees only those entries as candidates, and its pick must still
pass 3 and 4 (:func:`confirm`), so a snippet that talks the model round gains nothing the catalog
and the evidence do not support.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from matching_pipeline.core.catalog import CatalogIndex, document_text
from matching_pipeline.core.identifiers import extract_model_numbers, find_conflict, same_model
from matching_pipeline.core.llm import Answer, Question, make_question
from matching_pipeline.core.models import Candidate
from matching_pipeline.core.normalize import (
    is_missing,
    normalize_gtin,
    normalize_manufacturer,
    normalize_part_number,
    normalize_text,
)

_GTIN_CANDIDATE = re.compile(r"(?<![\d])\d{8,14}(?![\d])")
_DIGIT_PART_NUMBER = re.compile(r"(?<![\w-])\d{2,}(?:[-/]\d{2,})+(?![\w-])")
"""All-digit part numbers in groups ("915-000049", "010-00782-01"): not model numbers (no
letters), not GTINs, yet common; looked up as part numbers only, so dates and phone numbers in
snippets find nothing."""
_MIN_DIGIT_PART_NUMBER = 6
_URL_PIECE_SPLIT = re.compile(r"[-_.+~,\s]+")
_URL_WINDOW = 3
"""URL slugs split a model number into pieces ("kdl-40v4100"); windows of up to three adjacent
pieces rebuild it. Junk concatenations ("SONYKDL40V4100") simply find nothing in the catalog."""
_STOPWORDS = frozenset("the and for with of in on to a an by from new per".split())

ACCEPT_CONFIDENCE: tuple[float, ...] = (0.8, 0.85, 0.9)
"""Confidence of a web accept by number of supporting results (1, 2, 3+): below the enhanced
stage's identifier accepts, because a page's identifier is one step removed from the item."""


class SearchHit(Protocol):
    """What evidence is read from: any result with a title, a URL and a snippet."""

    title: str
    url: str
    snippet: str


@dataclass(frozen=True)
class WebEvidenceSettings:
    """Knobs of the acceptance rule; each guards against a way web evidence misleads."""

    max_queries_per_item: int = 3
    """Queries tried per item, most specific first; the item stops at the first decisive one."""
    max_query_chars: int = 200
    """Engines truncate or reject long queries (Brave: 400 chars, 50 words)."""
    min_relatedness: float = 0.5
    """Share of the item's description words a result must contain to count as about the item
    when it carries none of the item's identifiers."""
    min_supporting_results: int = 1
    min_catalog_similarity: float = 0.2
    """TF-IDF cosine between item and entry below which the catalog does not corroborate an entry
    that was not among the item's earlier candidates (unrelated products score about 0.0-0.1)."""
    evidence_chars: int = 300
    """Snippet length kept in the decision's evidence."""
    confirmation_chars: int = 1500
    """Text of the supporting results shown to a model asked to choose among several entries."""


@dataclass(frozen=True)
class ItemProfile:
    """What the rule compares results against, computed once per item."""

    description: str
    text: str
    part_number: str | None
    gtin: str | None
    manufacturer: str | None
    model_numbers: frozenset[str]
    words: frozenset[str]

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> ItemProfile:
        description = _cell(item, "description") or ""
        part, maker = _cell(item, "part_number"), _cell(item, "manufacturer")
        words = frozenset(
            w for w in normalize_text(f"{maker or ''} {description}").split() if len(w) > 1 and w not in _STOPWORDS
        )
        normalized_part = normalize_part_number(part)
        return cls(
            description=description,
            text=document_text(description, None, part),
            part_number=normalized_part if normalized_part and len(normalized_part) >= 4 else None,
            gtin=normalize_gtin(_cell(item, "gtin")),
            manufacturer=normalize_manufacturer(maker),
            model_numbers=frozenset(extract_model_numbers(description)),
            words=words,
        )


Outcome = Literal["accepted", "ambiguous", "rejected", "no_evidence"]


@dataclass
class WebVerdict:
    """The rule's answer for one item given the results read so far.

    ``outcome`` is ``accepted``, ``ambiguous`` (several entries supported), ``rejected`` (one
    entry supported but contradicted or not corroborated) or ``no_evidence``. Only
    ``no_evidence`` is worth another query: more results cannot remove a competitor or a conflict.
    """

    outcome: Outcome
    catalog_id: str | None = None
    confidence: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    supported: list[Candidate] = field(default_factory=list)
    """Entries the related results point at, most similar to the item first."""
    support: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The related results behind each supported entry (url, title, snippet, identifiers)."""

    @property
    def decisive(self) -> bool:
        return self.outcome != "no_evidence"


def _cell(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if is_missing(value) else str(value).strip()


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut or text[:limit]


def build_queries(item: Mapping[str, Any], settings: WebEvidenceSettings = WebEvidenceSettings()) -> list[str]:
    """Queries for one item, most specific first: manufacturer + part number, GTIN, description.

    The manufacturer is prepended only where the text lacks it, so engines see each word once.
    """
    description, part, maker = _cell(item, "description"), _cell(item, "part_number"), _cell(item, "manufacturer")
    gtin = normalize_gtin(_cell(item, "gtin"))

    def with_maker(text: str) -> str:
        if maker and normalize_text(maker) not in normalize_text(text):
            return f"{maker} {text}"
        return text

    proposals = [
        with_maker(part) if part else None,
        _printed_gtin(gtin) if gtin else None,
        with_maker(description) if description else None,
    ]
    queries: dict[str, str] = {}
    for proposal in proposals:
        if proposal:
            query = _truncate(" ".join(proposal.split()), settings.max_query_chars)
            queries.setdefault(query.casefold(), query)
    return list(queries.values())[: settings.max_queries_per_item]


def _printed_gtin(gtin14: str) -> str:
    """The GTIN as printed on packs (EAN-8, UPC-A or EAN-13), not its zero-padded GTIN-14 form."""
    body = gtin14.lstrip("0")
    width = next(w for w in (8, 12, 13, 14) if len(body) <= w)
    return body.zfill(width)


def _digit_part_number(joined: str) -> list[str]:
    return [joined] if len(joined) >= _MIN_DIGIT_PART_NUMBER else []


def _url_identifiers(url: str) -> list[str]:
    """Identifiers in a URL's path. The query string is skipped on purpose: search and shop pages
    echo our own query there, which would make the item's text look like evidence for itself."""
    found: list[str] = []
    for segment in unquote(urlsplit(url).path).split("/"):
        pieces = [p for p in _URL_PIECE_SPLIT.split(segment) if p]
        for width in range(1, _URL_WINDOW + 1):
            for start in range(len(pieces) - width + 1):
                joined = "".join(pieces[start : start + width])
                if not joined.isdigit():
                    found.extend(extract_model_numbers(joined))
                elif gtin := normalize_gtin(joined):
                    found.append(gtin)
                elif width > 1:
                    found.extend(_digit_part_number(joined))
    return found


def result_identifiers(result: SearchHit) -> list[str]:
    """Normalised GTINs, model numbers and all-digit part numbers in a result's title, snippet
    and URL path."""
    found: dict[str, None] = {}
    for text in (result.title, result.snippet):
        for raw in _GTIN_CANDIDATE.findall(text):
            if gtin := normalize_gtin(raw):
                found.setdefault(gtin)
        for raw in _DIGIT_PART_NUMBER.findall(text):
            for part in _digit_part_number(normalize_part_number(raw) or ""):
                found.setdefault(part)
        for model in extract_model_numbers(text):
            found.setdefault(model)
    for token in _url_identifiers(result.url):
        found.setdefault(token)
    return list(found)


def relation(profile: ItemProfile, result: SearchHit, identifiers: Collection[str], min_relatedness: float) -> str | None:
    """Why ``result`` is about the item ("part_number", "gtin", "model_number", "words 0.67"), or None."""
    haystack = normalize_part_number(f"{result.title} {result.snippet} {unquote(urlsplit(result.url).path)}") or ""
    if profile.part_number and profile.part_number in haystack:
        return "part_number"
    if profile.gtin and profile.gtin in identifiers:
        return "gtin"
    if any(same_model(mine, theirs) for mine in profile.model_numbers for theirs in identifiers):
        return "model_number"
    if profile.words:
        words = set(normalize_text(f"{result.title} {result.snippet}").split())
        coverage = len(profile.words & words) / len(profile.words)
        if coverage >= min_relatedness:
            return f"words {coverage:.2f}"
    return None


def _manufacturers_disagree(mine: str | None, theirs: Any) -> bool:
    other = normalize_manufacturer(theirs)
    return bool(mine and other and mine not in other and other not in mine)


def assess(
    item: Mapping[str, Any] | ItemProfile,
    results: Sequence[SearchHit],
    index: CatalogIndex,
    earlier_candidates: Collection[str] = (),
    settings: WebEvidenceSettings = WebEvidenceSettings(),
) -> WebVerdict:
    """Apply the acceptance rule of the module docstring to every result read for one item."""
    profile = item if isinstance(item, ItemProfile) else ItemProfile.of(item)
    support: dict[str, list[dict[str, Any]]] = {}
    unrelated = 0
    for result in results:
        hits = {token: ids for token in result_identifiers(result) if (ids := index.find_by_identifier(token))}
        if not hits:
            continue
        why = relation(profile, result, hits.keys(), settings.min_relatedness)
        if why is None:
            unrelated += 1
            continue
        for catalog_id in dict.fromkeys(i for ids in hits.values() for i in ids):
            support.setdefault(catalog_id, []).append(
                {
                    "url": result.url,
                    "title": result.title,
                    "snippet": _truncate(result.snippet, settings.evidence_chars),
                    "identifiers": [token for token, ids in hits.items() if catalog_id in ids],
                    "related_by": why,
                }
            )
    evidence: dict[str, Any] = {"unrelated_results": unrelated}
    if not support:
        return WebVerdict("no_evidence", evidence=evidence)
    similarities = dict(zip(support, index.similarity(profile.text, list(support)), strict=True))
    supported = [index.candidate(i, round(s, 6)) for i, s in sorted(similarities.items(), key=lambda kv: -kv[1])]
    if len(support) > 1:
        evidence.update(rejected="ambiguous", supported={c.catalog_id: [s["url"] for s in support[c.catalog_id][:3]] for c in supported})
        return WebVerdict("ambiguous", evidence=evidence, supported=supported, support=support)
    [supporting] = support.values()
    if len(supporting) < settings.min_supporting_results:
        return WebVerdict("no_evidence", evidence=evidence, supported=supported, support=support)
    return _checked(profile, supported[0], supporting, earlier_candidates, settings, evidence, supported, support)


def _checked(
    profile: ItemProfile,
    chosen: Candidate,
    supporting: list[dict[str, Any]],
    earlier_candidates: Collection[str],
    settings: WebEvidenceSettings,
    evidence: dict[str, Any],
    supported: list[Candidate],
    support: dict[str, list[dict[str, Any]]],
) -> WebVerdict:
    """Rules 3 and 4 for the one entry the evidence (or the model) singled out."""
    # The first supporting result is the one quoted; the others are listed by URL.
    evidence = {**evidence, **supporting[0], "supporting_urls": [s["url"] for s in supporting], "catalog_similarity": chosen.score}
    evidence.pop("rejected", None)
    verdict = WebVerdict("rejected", evidence=evidence, supported=supported, support=support)
    conflict = find_conflict(profile.description, chosen.description) if profile.description else None
    if conflict:
        evidence.update(rejected="conflict", conflict=conflict)
    elif _manufacturers_disagree(profile.manufacturer, chosen.manufacturer):
        evidence.update(rejected="manufacturer", conflict=f"manufacturer: {profile.manufacturer} vs {chosen.manufacturer}")
    elif chosen.catalog_id not in earlier_candidates and chosen.score < settings.min_catalog_similarity:
        evidence["rejected"] = "not corroborated by the catalog (entry unlike the item and not an earlier candidate)"
    else:
        evidence["rule"] = "web_identifier"
        verdict.outcome, verdict.catalog_id = "accepted", chosen.catalog_id
        verdict.confidence = ACCEPT_CONFIDENCE[min(len(supporting), len(ACCEPT_CONFIDENCE)) - 1]
    return verdict


# -- confirmation by a model -------------------------------------------------------------------


def confirmation_question(
    item_id: str, item: Mapping[str, Any], verdict: WebVerdict, settings: WebEvidenceSettings = WebEvidenceSettings()
) -> Question:
    """The AI stage's select-one-or-none question for an ambiguous verdict.

    The candidates are only the entries the web evidence supports, so whatever a snippet says,
    the model can only pick among them; the supporting results travel as one more item field,
    inside the JSON document the system prompt declares to be data, never instructions.
    """
    base = make_question(item_id, item, verdict.supported)
    quoted = [
        f"[{entry}] {s['title']} - {s['snippet']} ({s['url']})"
        for entry, found in verdict.support.items()
        for s in found[:2]
    ]
    web_results = _truncate(" | ".join(quoted), settings.confirmation_chars)
    return Question(base.item_id, (*base.fields, ("web_results", web_results)), base.candidates)


def confirm(
    item: Mapping[str, Any] | ItemProfile,
    verdict: WebVerdict,
    answer: Answer,
    earlier_candidates: Collection[str] = (),
    settings: WebEvidenceSettings = WebEvidenceSettings(),
) -> WebVerdict:
    """The verdict once the model answered: its pick must still pass rules 3 and 4, and its
    confidence is capped at the rule's own, since it only chose among web-supported entries."""
    profile = item if isinstance(item, ItemProfile) else ItemProfile.of(item)
    model = {"choice": answer.catalog_id, "reason": answer.reason, "confidence": answer.confidence}
    if answer.catalog_id is None or answer.catalog_id not in verdict.support:
        return WebVerdict(verdict.outcome, evidence={**verdict.evidence, "model": model}, supported=verdict.supported, support=verdict.support)
    chosen = next(c for c in verdict.supported if c.catalog_id == answer.catalog_id)
    checked = _checked(
        profile, chosen, verdict.support[answer.catalog_id], earlier_candidates, settings, verdict.evidence, verdict.supported, verdict.support
    )
    checked.evidence["model"] = model
    if checked.catalog_id is not None:
        checked.evidence["rule"] = "web_model_confirmed"
        checked.confidence = min(answer.confidence, ACCEPT_CONFIDENCE[0])
    return checked
