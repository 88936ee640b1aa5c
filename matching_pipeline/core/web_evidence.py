"""From web search results to a catalog entry, accepting only what agrees with everything the item says.

Web pages are untrusted text, and real result lists mix the right product with its near misses:
the same maker's other models, an accessory for it, another colour, the previous generation.
A result never names a catalog entry directly: identifiers read from it (GTINs, model and part
numbers in its title, snippet and URL path) are looked up in the catalog index, exactly as an
item's own identifiers are (a model number several entries share supports each of them). A
match is accepted only when

1. a result states one of the item's own codes (part number, GTIN, model number, all-digit
   part number; :func:`stated_codes`), or that code with a short affix more or less. Results
   that only share the item's words are read when no result states its code, and then never
   accept: against near misses of the same maker they were right about half the time, so they
   are a question for a model (outcome ``unconfirmed``);
2. the result's title does not contradict the item (:func:`contradiction`): no other code where
   the item states one, no other maker, no conflicting attribute of
   :func:`~matching_pipeline.core.identifiers.find_conflict` (colour, measures, platform,
   edition, version, pack size, accessory, bundle and condition markers...). An identifier read
   from a page about another product is no evidence about the item;
3. the entry agrees with the item too (the same check on its title, part number, GTIN and maker)
   and the catalog corroborates it: it was among the item's earlier candidates, or its TF-IDF
   similarity to the item is at least ``min_catalog_similarity``. Entries that fail are
   *refused*: they cannot be the item, so they neither win nor compete;
4. exactly one entry is left, supported by at least ``min_supporting_results`` results.

Codes are compared strictly when one of the item's codes is known to the catalog (it is the
catalog's own code: a page or an entry with another code is another product, whatever a
snippet says). A code the catalog does not know (a shop's stock code) may be tied to the
catalog's codes by a page that states it exactly: that page is the cross-reference the web
stage exists to find, so the code comparison is skipped for it and the entries it supports.

So a snippet that gives instructions changes nothing (instructions are not identifiers), a
fake identifier finds no entry, a real identifier of an unrelated entry planted in a page that
imitates the item is refused by the catalog (3), and a near miss of the right product is
refused by what the item says about itself (2, 3).

When several entries are left, or only words relate the results to the item, a model may be
asked to choose (see :func:`confirmation_question`): it sees only the entries left as
candidates, so a snippet that talks the model round gains nothing the catalog and the evidence
do not support. Without a model the item stays unmatched, and its evidence says why:
``rejected`` (the reason), ``ambiguous`` (the competing entries), ``refused`` (entry -> why it
cannot be the item) and ``contradicting_results`` (pages set aside, with the contradiction).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from matching_pipeline.core.attributes import active_vocabulary
from matching_pipeline.core.catalog import CatalogIndex, document_text
from matching_pipeline.core.identifiers import (
    MIN_MODEL_NUMBER_LENGTH,
    extract_features,
    extract_model_numbers,
    find_conflict,
    same_model,
)
from matching_pipeline.core.llm import Answer, Question, make_question
from matching_pipeline.core.models import Candidate
from matching_pipeline.core.normalize import (
    is_missing,
    normalize_gtin,
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
_BARE_DIGITS = re.compile(r"(?<![\w.,/-])\d+(?:[-/]\d+)*(?![\w-]|[.,/]\d)")
"""Digit runs, alone or in groups ("3741001", "010-10231-01", "7-11719-70670-0"): read as codes
of the item or an entry when at least ``_MIN_DIGIT_PART_NUMBER`` digits long."""
_OWN_TEXT = re.compile(r"\s[-\u2013\u2014]\s")
_COMPATIBILITY = re.compile(r"\b(?:for|fits|compatible\s+with|replaces)\b", re.IGNORECASE)
NOT_CORROBORATED = "not corroborated by the catalog (entry unlike the item and not an earlier candidate)"
WORDS_ONLY = "unconfirmed: no result states the item's own codes, only its words"
EXACT_RELATIONS = frozenset({"part_number", "gtin", "model_number", "code"})
"""Relations by which a result states one of the item's own codes exactly."""
STRONG_RELATIONS = EXACT_RELATIONS | {"model_family", "code_family"}
"""Relations by which a result states one of the item's own codes, or the code with a short
affix more or less (:func:`~matching_pipeline.core.identifiers.same_model`): such a result is
about the item or its family whatever else its words say."""

ACCEPT_CONFIDENCE: tuple[float, ...] = (0.8, 0.85, 0.9)
"""Confidence of a web accept by number of supporting results (1, 2, 3+): below the enhanced
stage's identifier accepts, because a page's identifier is one step removed from the item."""


class SearchHit(Protocol):
    """What evidence is read from: any result with a title, a URL and a snippet (read-only, so
    frozen records such as the search client's results qualify)."""

    @property
    def title(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def snippet(self) -> str: ...


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
    """What the rule compares results and entries against, computed once per item."""

    description: str
    text: str
    part_number: str | None
    gtin: str | None
    manufacturer: str | None
    """The item's maker as comparable words (the vocabulary's canonical name), when its
    manufacturer field states one."""
    model_numbers: frozenset[str]
    words: frozenset[str]
    codes: frozenset[str] = frozenset()
    """Every code the item states about itself: part number, GTIN, model numbers and all-digit
    part numbers of its description (not those after "for"). An entry or a page naming codes of
    its own must share one of these."""

    @classmethod
    def of(cls, item: Mapping[str, Any]) -> ItemProfile:
        description = _cell(item, "description") or ""
        part, maker = _cell(item, "part_number"), _cell(item, "manufacturer")
        words = frozenset(
            w for w in normalize_text(f"{maker or ''} {description}").split() if len(w) > 1 and w not in _STOPWORDS
        )
        normalized_part = normalize_part_number(part)
        gtin = normalize_gtin(_cell(item, "gtin"))
        return cls(
            description=description,
            text=document_text(description, None, part),
            part_number=normalized_part if normalized_part and len(normalized_part) >= MIN_MODEL_NUMBER_LENGTH else None,
            gtin=gtin,
            manufacturer=active_vocabulary().canonical_maker(maker),
            model_numbers=frozenset(extract_model_numbers(description)),
            words=words,
            codes=stated_codes(description, part, gtin),
        )


Outcome = Literal["accepted", "ambiguous", "unconfirmed", "rejected", "no_evidence"]


@dataclass
class WebVerdict:
    """The rule's answer for one item given the results read so far.

    ``outcome`` is ``accepted``; ``ambiguous`` (results stating the item's code support several
    entries); ``unconfirmed`` (entries are supported by results that share the item's words but
    state none of its codes: a question for a model, never an accept); ``rejected`` (entries
    were found but every one was refused, or every result about the item contradicted it); or
    ``no_evidence``. Only an accept or an ambiguity among results stating the item's code
    settles the item: more results cannot remove such a competitor, while they may yet find a
    page stating the item's code.
    """

    outcome: Outcome
    catalog_id: str | None = None
    confidence: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)
    supported: list[Candidate] = field(default_factory=list)
    """Entries left after refusals, most similar to the item first."""
    support: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """The related results behind each entry left (url, title, snippet, identifiers)."""

    by_code: bool = False
    """True when the supporting results state one of the item's own codes."""

    @property
    def decisive(self) -> bool:
        return self.outcome == "accepted" or (self.outcome == "ambiguous" and self.by_code)

    @property
    def needs_model(self) -> bool:
        """Entries remain that only a model (or a person) can choose among."""
        return self.outcome in ("ambiguous", "unconfirmed") and bool(self.supported)


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


# -- codes and contradictions ------------------------------------------------------------------


def _own_text(text: str) -> str:
    """The parts of a title about the product itself: each " - " segment up to "for", "fits"
    or "compatible with", after which the title names the product an accessory belongs to."""
    return " - ".join(_COMPATIBILITY.split(segment, maxsplit=1)[0] for segment in _OWN_TEXT.split(text))


def stated_codes(text: str, *fields: str | None) -> frozenset[str]:
    """Codes a text states about its own product, normalised: model numbers, digit runs of at
    least six digits (grouped or not; GTIN-valid ones also as GTIN-14), plus ``fields`` (a part
    number or GTIN cell) as given."""
    found: set[str] = set(extract_model_numbers(text or ""))
    for raw in _BARE_DIGITS.findall(_own_text(text or "")):
        digits = re.sub(r"\D", "", raw)
        if len(digits) >= _MIN_DIGIT_PART_NUMBER:
            found.add(digits)
            if gtin := normalize_gtin(digits):
                found.add(gtin)
    for value in fields:
        code = normalize_part_number(value)
        if code and len(code) >= MIN_MODEL_NUMBER_LENGTH:  # shorter cells are too generic to compare
            found.add(code)
            if gtin := normalize_gtin(value):
                found.add(gtin)
    return frozenset(found)


def codes_agree(mine: Collection[str], theirs: Collection[str]) -> bool:
    """True when one code of each side names the same product: equal, or one the other plus a
    short region or maker affix (:func:`~matching_pipeline.core.identifiers.same_model`)."""
    return any(a == b or same_model(a, b) for a in mine for b in theirs)


def _fmt_codes(codes: Iterable[str]) -> str:
    return "/".join(sorted(codes)[:4])


def contradiction(
    profile: ItemProfile,
    text: str,
    maker: str | None = None,
    codes: Collection[str] | None = None,
    *,
    cross_referenced: bool = False,
) -> str | None:
    """Why a catalog entry or a result titled ``text`` cannot be about the item, else None.

    Its codes (``codes``, else those ``text`` states) must share one with the item's own when
    both state some: another model or part number of the same maker is another product. Then
    :func:`~matching_pipeline.core.identifiers.find_conflict` on the item's description:
    maker (``maker`` is the other side's canonical maker from a field; titles fall back to the
    maker they lead with), model number, version, edition, pack size and the attributes
    (colour, measures, platform, condition, accessory and bundle markers...).

    ``cross_referenced`` skips the comparison of codes (and of model numbers): for a page that
    states the item's own code, a code the catalog does not know, next to another code, the
    page itself is what ties the two together (a shop's stock code beside the maker's model).
    """
    features = extract_features(profile.description) if profile.description else None
    if not cross_referenced:
        theirs = stated_codes(text) if codes is None else codes
        if profile.codes and theirs and not codes_agree(profile.codes, theirs):
            return f"part number: {_fmt_codes(profile.codes)} vs {_fmt_codes(theirs)}"
    elif features is not None:
        features = replace(features, model_numbers=())
    if features is None:
        return None
    return find_conflict(features, text, makers=(profile.manufacturer, maker))


def _entry_text(candidate: Candidate) -> str:
    return " - ".join(v for v in (candidate.description, candidate.part_number) if v)


def entry_contradiction(
    profile: ItemProfile, candidate: Candidate, index: CatalogIndex, *, cross_referenced: bool = False
) -> str | None:
    """:func:`contradiction` for a catalog entry: its title, part number, GTIN and maker."""
    text = _entry_text(candidate)
    gtin = index.entry(candidate.catalog_id).get("gtin")
    codes = stated_codes(text, None if is_missing(gtin) else str(gtin))
    maker = active_vocabulary().canonical_maker(candidate.manufacturer)
    return contradiction(profile, text, maker, codes, cross_referenced=cross_referenced)


def anchored(profile: ItemProfile, index: CatalogIndex) -> bool:
    """Whether one of the item's own codes is known to the catalog (names an entry or a family
    of entries). Such a code is the catalog's own: whatever a page says, an entry or a page with
    other codes is another product. A code the catalog does not know (a shop's stock code) may
    be tied to the catalog's codes by a page that states both."""
    return any(index.find_by_identifier(code) or index.find_by_model_family(code) for code in profile.codes)


# -- reading results ---------------------------------------------------------------------------


def _lookup(index: CatalogIndex, token: str) -> list[str]:
    """Entries an identifier read from a page names: the one it identifies, else every entry
    whose own codes include it. A model number several entries share ("DSLRA350" in the body's
    title and in the body-and-lens kit's) identifies none of them, but a page naming it may be
    about any of them, so each is supported and none can win alone."""
    found = index.find_by_identifier(token)
    if found:
        return found
    return [i for i in index.find_by_model_family(token) if token in stated_codes(_entry_text(index.candidate(i, 0.0)))]


def relation(profile: ItemProfile, result: SearchHit, identifiers: Collection[str], min_relatedness: float) -> str | None:
    """Why ``result`` is about the item, or None: one of :data:`STRONG_RELATIONS` when it states
    one of the item's codes, else "words 0.67" when it has that share of the item's words."""
    haystack = normalize_part_number(f"{result.title} {result.snippet} {unquote(urlsplit(result.url).path)}") or ""
    if profile.part_number and profile.part_number in haystack:
        return "part_number"
    if profile.gtin and profile.gtin in identifiers:
        return "gtin"
    if profile.model_numbers & set(identifiers):
        return "model_number"
    if profile.codes:
        stated = {*identifiers, *stated_codes(f"{result.title} - {result.snippet}")}
        if profile.codes & stated:
            return "code"
        if any(same_model(mine, theirs) for mine in profile.model_numbers for theirs in identifiers):
            return "model_family"
        if codes_agree(profile.codes, stated):
            return "code_family"
    if profile.words:
        words = set(normalize_text(f"{result.title} {result.snippet}").split())
        coverage = len(profile.words & words) / len(profile.words)
        if coverage >= min_relatedness:
            return f"words {coverage:.2f}"
    return None


@dataclass
class _Read:
    """One result judged about the item and not contradicting it."""

    result: SearchHit
    related_by: str
    hits: dict[str, list[str]]
    """Identifier -> catalog entries it names."""
    codes: frozenset[str]
    """Codes its title states."""

    def quoted(self, catalog_id: str, settings: WebEvidenceSettings) -> dict[str, Any]:
        return {
            "url": self.result.url,
            "title": self.result.title,
            "snippet": _truncate(self.result.snippet, settings.evidence_chars),
            "identifiers": [token for token, ids in self.hits.items() if catalog_id in ids],
            "related_by": self.related_by,
        }


def assess(
    item: Mapping[str, Any] | ItemProfile,
    results: Sequence[SearchHit],
    index: CatalogIndex,
    earlier_candidates: Collection[str] = (),
    settings: WebEvidenceSettings = WebEvidenceSettings(),
) -> WebVerdict:
    """Apply the acceptance rule of the module docstring to every result read for one item."""
    profile = item if isinstance(item, ItemProfile) else ItemProfile.of(item)
    own_code_known = anchored(profile, index)
    reads: list[_Read] = []
    contradicting: list[dict[str, Any]] = []
    rivals: set[str] = set()  # entries named by related results whose titles contradict the item
    unrelated = 0
    for result in results:
        identifiers = result_identifiers(result)
        hits = {token: ids for token in identifiers if (ids := _lookup(index, token))}
        codes = stated_codes(result.title)
        if not hits and not codes:
            continue
        why = relation(profile, result, identifiers, settings.min_relatedness)
        if why is None:
            unrelated += bool(hits)
            continue
        cross = why in EXACT_RELATIONS and not own_code_known
        if reason := contradiction(profile, result.title, codes=codes, cross_referenced=cross):
            named = list(dict.fromkeys(i for ids in hits.values() for i in ids))
            contradicting.append({"url": result.url, "title": result.title, "reason": reason, "catalog_ids": named[:5]})
            rivals.update(named)
            continue
        reads.append(_Read(result, why, hits, codes))
    evidence: dict[str, Any] = {"unrelated_results": unrelated}
    if contradicting:
        evidence["contradicting_results"] = contradicting[:5]
    # A result stating the item's own code outranks any that merely shares its words.
    strong = [r for r in reads if r.related_by in STRONG_RELATIONS]
    used = strong or reads
    support: dict[str, list[dict[str, Any]]] = {}
    for read in used:
        for catalog_id in dict.fromkeys(i for ids in read.hits.values() for i in ids):
            support.setdefault(catalog_id, []).append(read.quoted(catalog_id, settings))
    similarities = dict(zip(support, index.similarity(profile.text, list(support)), strict=True))
    ranked = [index.candidate(i, round(s, 6)) for i, s in sorted(similarities.items(), key=lambda kv: -kv[1])]
    refused: dict[str, str] = {}
    for candidate in ranked:
        if candidate.catalog_id not in earlier_candidates and candidate.score < settings.min_catalog_similarity:
            refused[candidate.catalog_id] = NOT_CORROBORATED
            continue
        # A page stating a code of the item the catalog does not know ties it to the entry.
        cross = not own_code_known and any(s["related_by"] in EXACT_RELATIONS for s in support[candidate.catalog_id])
        if reason := entry_contradiction(profile, candidate, index, cross_referenced=cross):
            refused[candidate.catalog_id] = reason
    left = [c for c in ranked if c.catalog_id not in refused]
    kept = {c.catalog_id: support[c.catalog_id] for c in left}
    if refused:
        evidence["refused"] = refused
    if not left:
        naming = [c for c in contradicting if c["catalog_ids"]]
        if not refused and not naming:  # pages about other products the catalog lacks say nothing
            return WebVerdict("no_evidence", evidence=evidence)
        first = next(iter(refused.values()), None) or naming[0]["reason"]
        if first == NOT_CORROBORATED:
            evidence["rejected"] = first
        else:
            evidence.update(rejected="conflict", conflict=first)
        return WebVerdict("rejected", evidence=evidence)
    supported = {c.catalog_id: [s["url"] for s in kept[c.catalog_id][:3]] for c in left}
    if strong:
        if len(left) > 1:
            evidence.update(rejected="ambiguous", ambiguous=list(kept), supported=supported)
            return WebVerdict("ambiguous", evidence=evidence, supported=left, support=kept, by_code=True)
        [supporting] = kept.values()
        if len(supporting) < settings.min_supporting_results:
            return WebVerdict("no_evidence", evidence=evidence, supported=left, support=kept)
        return _accepted(left[0], supporting, evidence, left, kept)
    # Words alone never accept: near misses of the same maker share most of an item's words,
    # and the right page is not always among the results. They are a question for a model.
    # Entries refused on the entry's side, entries of related pages whose titles contradict the
    # item (a contradiction read against a vague item often rests on what it leaves unsaid)
    # and pages naming a code the catalog lacks are listed as competitors.
    competitors = [*refused, *sorted(rivals - refused.keys() - kept.keys())]
    chosen_codes = stated_codes(_entry_text(left[0]))
    unknown = [r for r in used if not r.hits and not codes_agree(r.codes, chosen_codes)]
    evidence.update(rejected=WORDS_ONLY, supported=supported)
    if len(left) > 1 or competitors or unknown:
        evidence["ambiguous"] = [*kept, *competitors]
    if unknown:
        evidence["products_not_in_catalog"] = [{"url": r.result.url, "title": r.result.title} for r in unknown[:3]]
    return WebVerdict("unconfirmed", evidence=evidence, supported=left, support=kept)


def _accepted(
    chosen: Candidate,
    supporting: list[dict[str, Any]],
    evidence: dict[str, Any],
    supported: list[Candidate],
    support: dict[str, list[dict[str, Any]]],
) -> WebVerdict:
    """The accepting verdict for the one entry the evidence (or the model) singled out."""
    # The first supporting result is the one quoted; the others are listed by URL.
    evidence = {**evidence, **supporting[0], "supporting_urls": [s["url"] for s in supporting], "catalog_similarity": chosen.score}
    evidence.pop("rejected", None)
    evidence["rule"] = "web_identifier"
    confidence = ACCEPT_CONFIDENCE[min(len(supporting), len(ACCEPT_CONFIDENCE)) - 1]
    return WebVerdict("accepted", chosen.catalog_id, confidence, evidence, supported, support, by_code=True)


# -- confirmation by a model -------------------------------------------------------------------


def confirmation_question(
    item_id: str, item: Mapping[str, Any], verdict: WebVerdict, settings: WebEvidenceSettings = WebEvidenceSettings()
) -> Question:
    """The AI stage's select-one-or-none question for an ambiguous verdict.

    The candidates are only the entries left after refusals, so whatever a snippet says, the
    model can only pick among entries that agree with the item; the supporting results travel
    as one more item field, inside the JSON document the system prompt declares to be data,
    never instructions.
    """
    base = make_question(item_id, item, verdict.supported)
    quoted = [
        f"[{entry}] {s['title']} - {s['snippet']} ({s['url']})"
        for entry, found in verdict.support.items()
        for s in found[:2]
    ]
    web_results = _truncate(" | ".join(quoted), settings.confirmation_chars)
    return Question(base.item_id, (*base.fields, ("web_results", web_results)), base.candidates)


def confirm(verdict: WebVerdict, answer: Answer) -> WebVerdict:
    """The verdict once the model answered. Its pick counts only if it is one of the entries
    left (each already passed every check), and its confidence is capped at the rule's own,
    since it only chose among web-supported entries."""
    model = {"choice": answer.catalog_id, "reason": answer.reason, "confidence": answer.confidence}
    if answer.catalog_id is None or answer.catalog_id not in verdict.support:
        evidence = {**verdict.evidence, "model": model}
        if answer.catalog_id is not None:
            evidence["rejected"] = "the model chose an entry the web evidence does not support"
        return WebVerdict(verdict.outcome, evidence=evidence, supported=verdict.supported, support=verdict.support)
    chosen = next(c for c in verdict.supported if c.catalog_id == answer.catalog_id)
    accepted = _accepted(chosen, verdict.support[answer.catalog_id], verdict.evidence, verdict.supported, verdict.support)
    accepted.evidence.update(model=model, rule="web_model_confirmed")
    accepted.confidence = min(answer.confidence, ACCEPT_CONFIDENCE[0])
    return accepted
