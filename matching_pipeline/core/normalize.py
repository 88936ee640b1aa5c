"""Normalisation of the fields the matcher compares.

Customer lists and catalogs spell the same thing differently (accents, case, separators in
part numbers, GTINs stored as numbers). Every comparison in the core goes through these
functions so that an item and a catalog entry are always reduced the same way.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pandas as pd

_NON_ALNUM_UPPER = re.compile(r"[^0-9A-Z]+")
_NOT_GTIN_CHARACTER = re.compile(r"[^0-9\s\-]")
_SPACES = re.compile(r"\s+")
_PUNCTUATION = re.compile(r"[^\w\s]|_")

_GTIN_MIN_DIGITS, _GTIN_MAX_DIGITS = 8, 14
"""EAN-8 up to GTIN-14; UPC-A (12) and EAN-13 lie between and share the same check-digit rule."""

_CORPORATE_SUFFIXES: frozenset[str] = frozenset(
    {"inc", "incorporated", "corp", "corporation", "co", "company", "ltd", "limited", "llc", "gmbh", "ag", "sa", "plc"}
)


def is_missing(value: Any) -> bool:
    """True for None, NaN, pandas NA and blank strings: the forms an absent cell takes after I/O."""
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-likes are values, not missing markers
        return False


def fold_unicode(text: str) -> str:
    """Strip accents and compatibility forms so "Café" and "Cafe", "ﬁ" and "fi" compare equal."""
    if text.isascii():  # most product text: nothing to fold, and this is on the hot path
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def normalize_text(value: Any) -> str:
    """Lowercase, accent-free, punctuation-free text with single spaces ("" when missing).

    Punctuation becomes a space rather than vanishing so that "Sony-Bravia" and "Sony Bravia"
    give the same words while "KDL-40" still keeps its two parts adjacent for character n-grams.
    """
    if is_missing(value):
        return ""
    text = fold_unicode(str(value)).lower()
    return _SPACES.sub(" ", _PUNCTUATION.sub(" ", text)).strip()


def normalize_manufacturer(value: Any) -> str | None:
    """Manufacturer without corporate suffixes, so "Sony Corp." and "SONY" agree; None when missing."""
    words = [w for w in normalize_text(value).split() if w not in _CORPORATE_SUFFIXES]
    return " ".join(words) or None


def normalize_part_number(value: Any) -> str | None:
    """Uppercase alphanumerics only: "kdl-40 v4100" -> "KDL40V4100"; None when nothing is left.

    Suffixes such as region or colour codes ("/NA", "-BK") are deliberately kept: they often
    tell variants apart, so dropping them would turn distinct products into one key. Loose
    matching of such variants belongs to the fuzzy stage, where margins and conflicts guard it.
    """
    if is_missing(value):
        return None
    cleaned = _NON_ALNUM_UPPER.sub("", fold_unicode(str(value)).upper())
    return cleaned or None


def gtin_check_digit(body: str) -> int:
    """GS1 check digit for the digits before it: weights 3,1,3,... from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def normalize_gtin(value: Any) -> str | None:
    """GTIN-14 (zero-padded) when ``value`` is a valid EAN-8, UPC-A, EAN-13 or GTIN-14, else None.

    Spreadsheets hand GTINs over as floats ("12345678905.0") or with spaces and dashes, and
    drop leading zeros; all of these are accepted. Anything with letters, a wrong length or a
    wrong check digit is rejected rather than guessed, because a GTIN match is the
    strongest evidence the matcher accepts.
    """
    if is_missing(value):
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    text = str(value).strip()
    if text.endswith(".0"):
        text = text[:-2]
    if _NOT_GTIN_CHARACTER.search(text):
        return None
    digits = re.sub(r"\D", "", text)
    # 9 to 11 digits are shorter GTINs that lost leading zeros in a numeric column; since the
    # check digit is weighted from the right, zero-padding never changes it.
    if not _GTIN_MIN_DIGITS <= len(digits) <= _GTIN_MAX_DIGITS or not digits.strip("0"):
        return None
    if int(digits[-1]) != gtin_check_digit(digits[:-1]):
        return None
    return digits.zfill(14)


def is_valid_gtin(value: Any) -> bool:
    """True when ``value`` normalises to a GTIN-14 (see :func:`normalize_gtin`)."""
    return normalize_gtin(value) is not None
