"""Identifiers and variant attributes read from free-text product titles.

Two jobs. First, model numbers ("KDL-40V4100", "0619B002") are the strongest evidence a title
carries, and the matcher accepts a unique one outright. Second, titles that are otherwise near
identical often name different variants (v2 vs v3, Home vs Professional, 2-pack vs single,
16GB vs 32GB, 42in vs 50in); text similarity cannot see these differences, so every automatic
accept is checked with :func:`find_conflict` and a conflicting pair is left for a closer look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

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

EDITION_WORDS = frozenset(
    """standard professional pro home premium ultimate enterprise business deluxe limited collector
    gold platinum goty student academic upgrade basic starter essentials lite""".split()
)
"""Words that name an edition of software, media or devices; "Home Premium" and "Professional"
are different products even when every other word agrees."""
_EDITION_ALIASES = {"pro": "professional"}
_EDITION_PHRASE = re.compile(r"\b([a-z]+)(?:'s)?\s+edition\b")
_WORD = re.compile(r"[a-z]+")

_PACK_WORDS = {"single": 1, "twin": 2, "double": 2, "dual": 2, "triple": 3}
_QUANTITY_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?:pack|set|case|box|bag|lot)\s+of\s+(\d+)\b"),
    re.compile(r"\b(\d+)\s?-?\s?(?:pack|pk|pcs|count|ct)\b"),
    re.compile(r"\b(single|twin|double|dual|triple)[\s-]?pack\b"),
)
# "x12" only as a lowercase word of its own: "X50", "LCS-X20" and "4'x6'" are models and sizes.
_TIMES_QUANTITY = re.compile(r"(?:^|(?<=[\s(]))x\s?(\d{1,3})(?=$|[\s),])")
_CAPACITY = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(kb|mb|gb|tb)\b")
_CAPACITY_IN_GB = {"kb": 1e-6, "mb": 1e-3, "gb": 1.0, "tb": 1e3}
# A lone apostrophe is read as inches on purpose: exported titles turn 52" into 52' far more
# often than a product title states a size in feet.
SIZE_TOLERANCE = 0.5
"""Inches within which two sizes agree: a 31.5in panel is sold as a 32in TV."""
_SIZE = re.compile(r"(?<![\w./])(\d+(?:\.\d+)?)\s?(?:\"|''|'|-?\s?inch(?:es)?\b|-?in\b(?!\s?\d))")


@dataclass(frozen=True)
class ProductFeatures:
    """What a title says about identity and variant, reduced to comparable values."""

    model_numbers: tuple[str, ...] = ()
    """In order of appearance, as :func:`extract_model_numbers` returns them."""
    versions: frozenset[tuple[str, str]] = frozenset()
    """(scheme, number) pairs such as ("v", "2") or ("gen", "3"): numbers compare within a scheme."""
    editions: frozenset[str] = frozenset()
    quantity: int | None = None
    capacities: frozenset[float] = frozenset()
    sizes: frozenset[float] = frozenset()


def _is_measurement(pieces: list[str]) -> bool:
    """True for "16GB", "14-42MM", "2-PACK": numbers up to a number+unit piece.

    A unit-like piece after letters ("CLI-8M") is a model suffix, not a measurement.
    """
    for i, piece in enumerate(pieces):
        if not piece.isdigit():
            following = pieces[i - 1] + piece if i and pieces[i - 1].isdigit() else piece
            found = _MEASUREMENT.match(following)
            return bool(found) and found.group(1) in _UNITS
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


def _editions(text: str) -> frozenset[str]:
    words = set(_WORD.findall(text)) & EDITION_WORDS | set(_EDITION_PHRASE.findall(text))
    return frozenset(_EDITION_ALIASES.get(w, w) for w in words)


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
    folded = fold_unicode(text or "")
    lowered = folded.lower()
    return ProductFeatures(
        model_numbers=tuple(extract_model_numbers(text)),
        versions=_versions(lowered),
        editions=_editions(lowered),
        quantity=_quantity(folded),
        capacities=frozenset(float(n) * _CAPACITY_IN_GB[u] for n, u in _CAPACITY.findall(lowered)),
        sizes=frozenset(float(n) for n in _SIZE.findall(lowered)),
    )


def same_model(a: str, b: str) -> bool:
    """True when one model number is the other plus a short prefix or suffix.

    "FS105" and "FS105NA" (region), "SDV02GU1A" and "RPSDV02GU1A" (maker prefix) agree;
    "YHT390BL" and "YHT390BK" do not: a different suffix usually means a different colour.
    """
    short, long = sorted((a, b), key=len)
    return short in long and len(long) - len(short) <= MAX_VARIANT_SUFFIX


def _fmt(values: frozenset) -> str:
    return "/".join(sorted(f"{v:g}" if isinstance(v, float) else str(v) for v in values))


def find_conflict(
    item: str | ProductFeatures, candidate: str | ProductFeatures, *, unstated_quantity_is_one: bool = True
) -> str | None:
    """Why ``item`` and ``candidate`` cannot be the same product, or None when nothing contradicts.

    An attribute stated by only one side is not a conflict (catalog titles routinely omit
    them), with one exception: by default a pack size above one against no pack size, since
    a multi-pack and a single unit are different sale units that titles otherwise describe
    alike. Pass ``unstated_quantity_is_one=False`` when an exact identifier already ties the
    two to one SKU ("Print Paper - SVMF40P" and "Paper 40 Pack - SVMF40P").
    """
    a = extract_features(item) if isinstance(item, str) else item
    b = extract_features(candidate) if isinstance(candidate, str) else candidate
    if a.model_numbers and b.model_numbers and not any(
        same_model(x, y) for x in a.model_numbers for y in b.model_numbers
    ):
        return f"model number: {_fmt(a.model_numbers)} vs {_fmt(b.model_numbers)}"
    for scheme in sorted({s for s, _ in a.versions} & {s for s, _ in b.versions}):
        mine = frozenset(f"{scheme}{n}" for s, n in a.versions if s == scheme)
        theirs = frozenset(f"{scheme}{n}" for s, n in b.versions if s == scheme)
        if not mine & theirs:
            return f"version: {_fmt(mine)} vs {_fmt(theirs)}"
    if a.editions - b.editions and b.editions - a.editions:
        return f"edition: {_fmt(a.editions)} vs {_fmt(b.editions)}"
    if unstated_quantity_is_one:
        mine, theirs = a.quantity or 1, b.quantity or 1
    else:
        mine, theirs = a.quantity, b.quantity
    if mine is not None and theirs is not None and mine != theirs:
        return f"quantity: {mine} vs {theirs}"
    if a.capacities and b.capacities and not a.capacities & b.capacities:
        return f"capacity: {_fmt(a.capacities)}GB vs {_fmt(b.capacities)}GB"
    if a.sizes and b.sizes and not any(abs(x - y) <= SIZE_TOLERANCE for x in a.sizes for y in b.sizes):
        return f"size: {_fmt(a.sizes)}in vs {_fmt(b.sizes)}in"
    return None
