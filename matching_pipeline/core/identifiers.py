"""Identifiers and variant attributes read from free-text product titles.

Two jobs. First, model numbers ("KDL-40V4100", "0619B002") are the strongest evidence a title
carries, and the matcher accepts a unique one outright. Second, titles that are otherwise near
identical often name different variants (v2 vs v3, Home vs Professional, 2-pack vs single,
16GB vs 32GB, 42in vs 50in); text similarity cannot see these differences, so every automatic
accept is checked with :func:`find_conflict` and a conflicting pair is left for a closer look.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from matching_pipeline.core.attributes import (
    MAX_ATTRIBUTE_CHARS,
    ROMAN_SEQUELS,
    Attributes,
    active_vocabulary,
    attribute_conflict,
    maker_conflict,
    on_vocabulary_change,
    read_attributes,
    title_maker,
)
from matching_pipeline.core.normalize import fold_unicode

MIN_MODEL_NUMBER_LENGTH = 4
"""Shorter mixed tokens ("P80", "MP3", "V2") are too often generic to identify a product."""

MAX_VARIANT_SUFFIX = 3
"""Extra leading or trailing characters under which two model numbers still name one product
("FS105" vs "FS105NA", "SDV02GU1A" vs "RPSDV02GU1A"): region codes and maker prefixes are this short."""

_UNITS = frozenset(
    """KB MB GB TB MAH WH W WATT WATTS V VOLT VOLTS HZ KHZ MHZ GHZ IN INCH INCHES FT MM CM M KG G LB LBS
    OZ P I K MP X PK PACK PC PCS CT COUNT ST ND RD TH PORT PORTS CH CHANNEL CUP CUPS GEN BIT DPI PPM RPM
    QT L ML FPS DB PIECE SPEED WAY DISC DISCS LINE FOOT FEET YR YEAR MIN SEC HR HOUR AMP A MW KW""".split()
)
"""Letters that, after a number, make a measurement ("16GB", "1080p", "2-pack"), not a model."""

_TOKEN_SPLIT = re.compile(r"[\s,;:()\[\]{}|\"'+&!?*#]+")
_MEASUREMENT = re.compile(r"^\d+(?:\.\d+)?([A-Z]*)$")
_PIECE_SPLIT = re.compile(r"[-/]")
_SEGMENT_SPLIT = re.compile(r"\s[-\u2013\u2014]\s")
_COMPATIBILITY = re.compile(r"\b(?:for|fits|compatible\s+with|replaces)\b", re.IGNORECASE)

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10}
_VERSION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("v", re.compile(r"\b(?:v|ver|version)\.?\s?(\d+(?:\.\d+)*)\b")),
    ("gen", re.compile(r"\b(\d+)(?:st|nd|rd|th)[\s-]?gen(?:eration)?\b")),
    ("gen", re.compile(r"\bgen(?:eration)?[\s-]?(\d+)\b")),
    ("mark", re.compile(r"\b(?:mark|mk|series)[\s-]?(i{1,3}|iv|vi{0,3}|ix|x|\d+)\b")),
)

_EDITION_PHRASE = re.compile(r"\b([a-z]+)(?:'s)?\s+edition\b")
""""Collector's Edition", "Anniversary Edition": any word before "edition" names one."""

_PACK_WORDS = {"single": 1, "twin": 2, "double": 2, "dual": 2, "triple": 3, "two": 2, "three": 3, "four": 4, "six": 6}
_QUANTITY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?:pack|set|case|box|bag|lot)\s+of\s+(\d+)\b"),
    re.compile(r"\b(\d+)\s?-?\s?(?:pack|pk|pcs|count|ct)\b"),
    re.compile(r"\b(single|twin|double|dual|triple|two|three|four|six)[\s-]?pack\b"),
)
# "x12" only as a lowercase word of its own: "X50", "LCS-X20" and "4'x6'" are models and sizes.
_TIMES_QUANTITY = re.compile(r"(?:^|(?<=[\s(]))x\s?(\d{1,3})(?=$|[\s),])")
ROMAN_NUMERALS = {value: roman for roman, value in ROMAN_SEQUELS.items()}


@dataclass(frozen=True)
class ProductFeatures:
    """What a title says about identity and variant, reduced to comparable values."""

    model_numbers: tuple[str, ...] = ()
    """In order of appearance, as :func:`extract_model_numbers` returns them."""
    versions: frozenset[tuple[str, str]] = frozenset()
    """(scheme, number) pairs such as ("v", "2") or ("gen", "3"): numbers compare within a scheme."""
    editions: frozenset[str] = frozenset()
    quantity: int | None = None
    attributes: Attributes = field(default_factory=Attributes)
    """Colour, platform, measures, markers... read with the active vocabulary."""


def _is_measurement(pieces: list[str]) -> bool:
    """True for "16GB", "14-42MM", "2-PACK": numbers up to a number+unit piece.

    A unit-like piece after letters ("CLI-8M") is a model suffix, not a measurement.
    """
    for i, piece in enumerate(pieces):
        if not piece.isdigit():
            following = pieces[i - 1] + piece if i and pieces[i - 1].isdigit() else piece
            found = _MEASUREMENT.match(following)
            return found is not None and found.group(1) in _UNITS
    return False


@lru_cache(maxsize=500_000)
def _model_number(raw: str) -> str | None:
    """The joined form of one raw token if it looks like a model number.

    Hyphens, slashes and dots inside a token are dropped so "KX-TG1034S" and "KXTG1034S"
    agree; a token whose parts are measurements ("14-42mm", "2-pack", "6.0") is not a model.
    """
    token = raw.strip("-/.").upper()
    pieces = [p for p in _PIECE_SPLIT.split(token) if p]
    if not pieces or "." in token or _is_measurement(pieces):
        return None
    joined = "".join(pieces)
    # alphanumeric, and neither all digits nor all letters: it mixes both
    if len(joined) < MIN_MODEL_NUMBER_LENGTH or not joined.isalnum() or joined.isdigit() or joined.isalpha():
        return None
    return joined


def extract_model_numbers(text: str) -> list[str]:
    """Model-number tokens the product itself carries, in order of appearance, without repeats.

    Tokens after "for", "fits" or "compatible with" (up to the next " - " separator) name the
    product an accessory belongs to, so they are left out: otherwise "Battery for Canon
    XYZ123" would be matched to the camera.
    """
    found: dict[str, None] = {}
    for segment in _SEGMENT_SPLIT.split(fold_unicode(text or "")):
        own = _COMPATIBILITY.split(segment, maxsplit=1)[0]
        for raw in _TOKEN_SPLIT.split(own):
            for model in map(_model_number, _alternatives(raw)):
                if model:
                    found.setdefault(model)
    return list(found)


def _alternatives(raw: str) -> list[str]:
    """"TMRBT10/TMRBT10A" lists two models; "MB226LL/A" is one model with a short suffix."""
    parts = raw.split("/")
    return parts if len(parts) > 1 and all(len(p) >= MIN_MODEL_NUMBER_LENGTH for p in parts) else [raw]


def _versions(text: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        (scheme, str(_ROMAN.get(value, value)).removesuffix(".0"))
        for scheme, pattern in _VERSION_PATTERNS
        for value in pattern.findall(text)
    )


def _editions(text: str, attributes: Attributes) -> frozenset[str]:
    return attributes.get("editions") | frozenset(_EDITION_PHRASE.findall(text))


def _quantity(text: str) -> int | None:
    lowered = text.lower()
    for found in (*(p.search(lowered) for p in _QUANTITY_PATTERNS), _TIMES_QUANTITY.search(text)):
        if found:
            value = found.group(1)
            return _PACK_WORDS[value] if value in _PACK_WORDS else int(value)
    return None


@lru_cache(maxsize=200_000)
def extract_features(text: str) -> ProductFeatures:
    """Identity and variant attributes of a title (cached: catalog titles recur across items)."""
    folded = fold_unicode((text or "")[:MAX_ATTRIBUTE_CHARS])
    lowered = folded.lower()
    attributes = read_attributes(folded, active_vocabulary())
    return ProductFeatures(
        model_numbers=tuple(extract_model_numbers(folded)),
        versions=_versions(lowered),
        editions=_editions(lowered, attributes),
        quantity=_quantity(folded),
        attributes=attributes,
    )


on_vocabulary_change(extract_features.cache_clear)


def same_model(a: str, b: str) -> bool:
    """True when one model number is the other plus a short prefix or suffix.

    "FS105" and "FS105NA" (region), "SDV02GU1A" and "RPSDV02GU1A" (maker prefix) agree;
    "YHT390BL" and "YHT390BK" do not: a different suffix usually means a different colour.
    """
    short, long = sorted((a, b), key=len)
    return short in long and len(long) - len(short) <= MAX_VARIANT_SUFFIX


def _fmt(values: Iterable[object]) -> str:
    return "/".join(sorted(f"{v:g}" if isinstance(v, float) else str(v) for v in values))


def find_conflict(
    item: str | ProductFeatures,
    candidate: str | ProductFeatures,
    *,
    unstated_quantity_is_one: bool = True,
    makers: tuple[str | None, str | None] = (None, None),
) -> str | None:
    """Why ``item`` and ``candidate`` cannot be the same product, or None when nothing contradicts.

    Checks model numbers, maker, version, edition, pack size and every attribute of
    :func:`~matching_pipeline.core.attributes.attribute_conflict`. An attribute stated by only
    one side is not a conflict (catalog titles routinely omit them), except the markers that
    change what the product is (upgrade, refurbished, bundle, accessory...) and, by default, a
    pack size above one against no pack size: a multi-pack and a single unit are different sale
    units that titles otherwise describe alike. Pass ``unstated_quantity_is_one=False`` when an
    exact identifier already ties the two to one SKU ("Print Paper - SVMF40P" and
    "Paper 40 Pack - SVMF40P").

    ``makers`` are the two sides' makers when known from a field (canonical, see
    :meth:`~matching_pipeline.core.attributes.Vocabulary.canonical_maker`); a side without one
    falls back to the maker its title leads with.
    """
    a = extract_features(item) if isinstance(item, str) else item
    b = extract_features(candidate) if isinstance(candidate, str) else candidate
    if a.model_numbers and b.model_numbers and not any(
        same_model(x, y) for x in a.model_numbers for y in b.model_numbers
    ):
        return f"model number: {_fmt(a.model_numbers)} vs {_fmt(b.model_numbers)}"
    vocabulary = active_vocabulary()
    reason = maker_conflict(
        makers[0] or title_maker(a.attributes.lead, vocabulary), makers[1] or title_maker(b.attributes.lead, vocabulary)
    )
    if reason:
        return reason
    for scheme in sorted({s for s, _ in a.versions} & {s for s, _ in b.versions}):
        mine = frozenset(f"{scheme}{n}" for s, n in a.versions if s == scheme)
        theirs = frozenset(f"{scheme}{n}" for s, n in b.versions if s == scheme)
        if not mine & theirs:
            return f"version: {_fmt(mine)} vs {_fmt(theirs)}"
    if a.editions - b.editions and b.editions - a.editions:
        return f"edition: {_fmt(a.editions)} vs {_fmt(b.editions)}"
    my_quantity: int | None
    their_quantity: int | None
    if unstated_quantity_is_one:
        my_quantity, their_quantity = a.quantity or 1, b.quantity or 1
    else:
        my_quantity, their_quantity = a.quantity, b.quantity
    if my_quantity is not None and their_quantity is not None and my_quantity != their_quantity:
        return f"quantity: {my_quantity} vs {their_quantity}"
    return (
        attribute_conflict(a.attributes, b.attributes)
        or _sequel_conflict(a, b)
        or _accessory_for(a, b)
        or _accessory_for(b, a)
    )


def _sequel_conflict(a: ProductFeatures, b: ProductFeatures) -> str | None:
    """"Mark II" against a title without it is another generation, unless the other side says the
    same number plainly ("Jawbone 2") or glued to its model ("580EXII")."""
    for mine, theirs in ((a, b), (b, a)):
        for sequel in sorted(mine.attributes.sequels - theirs.attributes.sequels):
            roman = ROMAN_NUMERALS[sequel]
            if str(sequel) in theirs.attributes.numbers or any(m.endswith(roman) for m in theirs.model_numbers):
                continue
            return f"sequel: {roman} vs none" if mine is a else f"sequel: none vs {roman}"
    return None


def _accessory_for(a: ProductFeatures, b: ProductFeatures) -> str | None:
    """"Battery for Canon SD1000" against "Canon SD1000 Camera": ``a`` is made for ``b``."""
    if not a.attributes.for_clause or b.attributes.for_clause:
        return None
    named = set(extract_model_numbers(" ".join(a.attributes.for_clause)))
    if named & set(b.model_numbers) and not set(a.model_numbers) & set(b.model_numbers):
        return f"accessory: made for {_fmt(named & set(b.model_numbers))}"
    return None
