import math

import pandas as pd
import pytest

from matching_pipeline.core.normalize import (
    gtin_check_digit,
    is_missing,
    normalize_gtin,
    normalize_manufacturer,
    normalize_part_number,
    normalize_text,
)


@pytest.mark.parametrize("value", [None, math.nan, pd.NA, "", "   "])
def test_missing_forms(value):
    assert is_missing(value)


def test_zero_is_a_value():
    assert not is_missing(0)


def test_text_folds_accents_case_and_punctuation():
    assert normalize_text("Café  SONY-Bravia, 52\"") == "cafe sony bravia 52"


def test_part_number_keeps_only_alphanumerics():
    assert normalize_part_number(" kdl-40 v4100/ ") == "KDL40V4100"
    assert normalize_part_number("--") is None


def test_part_number_keeps_variant_suffix():
    assert normalize_part_number("FS105NA") != normalize_part_number("FS105")


def test_manufacturer_drops_corporate_suffix():
    assert normalize_manufacturer("Sony Corp.") == normalize_manufacturer("SONY") == "sony"


def test_check_digit():
    assert gtin_check_digit("400638133393") == 1
    assert gtin_check_digit("03600029145") == 2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("4006381333931", "04006381333931"),  # EAN-13
        ("036000291452", "00036000291452"),  # UPC-A
        ("96385074", "00000096385074"),  # EAN-8
        ("10036000291459", "10036000291459"),  # GTIN-14
        ("0 36000 29145-2", "00036000291452"),  # separators
        (4006381333931.0, "04006381333931"),  # numeric column
        ("36000291452", "00036000291452"),  # UPC-A that lost its leading zero
    ],
)
def test_valid_gtins_normalise_to_gtin14(raw, expected):
    assert normalize_gtin(raw) == expected


@pytest.mark.parametrize("raw", ["4006381333932", "1234567", "ABC6381333931", "00000000000000", None, "12.5"])
def test_invalid_gtins_are_rejected(raw):
    assert normalize_gtin(raw) is None
