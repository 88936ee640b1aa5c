"""The generator is the yardstick for the matcher, so its guarantees are tested directly."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

from matching_pipeline.sample.generator import generate_catalog, generate_items, write_sample

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "matching_pipeline" / "sample"


def _gtin_valid(code: str) -> bool:
    if not code.isdigit() or len(code) not in (8, 12, 13, 14):
        return False
    digits = [int(c) for c in code]
    body, check = digits[:-1], digits[-1]
    total = sum(d * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10 == check


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    return generate_catalog(2_000, seed=3)


@pytest.fixture(scope="module")
def items_and_truth(catalog: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_items(catalog, 1_500, seed=3)


def test_gtin_helper_agrees_with_known_codes() -> None:
    assert _gtin_valid("036000291452")  # UPC-A
    assert _gtin_valid("0036000291452")  # same, EAN-13 form
    assert _gtin_valid("4006381333931")  # EAN-13
    assert not _gtin_valid("036000291453")


def test_same_seed_gives_identical_frames(catalog: pd.DataFrame, items_and_truth) -> None:
    pd.testing.assert_frame_equal(generate_catalog(2_000, seed=3), catalog)
    items, truth = generate_items(catalog, 1_500, seed=3)
    pd.testing.assert_frame_equal(items, items_and_truth[0])
    pd.testing.assert_frame_equal(truth, items_and_truth[1])


def test_different_seed_gives_different_frames(catalog: pd.DataFrame, items_and_truth) -> None:
    assert not generate_catalog(2_000, seed=4).equals(catalog)
    items, truth = generate_items(catalog, 1_500, seed=4)
    assert not items.equals(items_and_truth[0])
    assert not truth.equals(items_and_truth[1])


def test_columns(catalog: pd.DataFrame, items_and_truth) -> None:
    items, truth = items_and_truth
    assert list(catalog.columns) == [
        "catalog_id", "description", "part_number", "manufacturer", "gtin", "category", "list_price"
    ]
    assert list(items.columns) == ["item_id", "description", "part_number", "manufacturer", "gtin", "quantity", "unit"]
    assert list(truth.columns) == ["item_id", "catalog_id"]
    assert len(catalog) == 2_000 and len(items) == len(truth) == 1_500


def test_ids_and_part_numbers_are_unique(catalog: pd.DataFrame, items_and_truth) -> None:
    items, truth = items_and_truth
    assert catalog["catalog_id"].is_unique
    assert catalog["catalog_id"].str.fullmatch(r"CAT-\d{6}").all()
    assert catalog["part_number"].is_unique
    assert catalog["part_number"].notna().all()
    assert catalog["description"].is_unique
    assert items["item_id"].is_unique
    assert items["item_id"].str.fullmatch(r"ITM-\d{6}").all()
    assert truth["item_id"].tolist() == items["item_id"].tolist()


def test_gtins_are_valid_where_present(catalog: pd.DataFrame, items_and_truth) -> None:
    items, _ = items_and_truth
    catalog_gtins = catalog["gtin"].dropna()
    assert 0.6 < len(catalog_gtins) / len(catalog) < 0.8
    assert catalog_gtins.is_unique
    assert all(_gtin_valid(g) for g in catalog_gtins)
    item_gtins = items["gtin"].dropna()
    assert 0.18 < len(item_gtins) / len(items) < 0.32
    assert all(_gtin_valid(g) for g in item_gtins)


def test_some_item_gtins_drop_the_leading_zero(catalog: pd.DataFrame, items_and_truth) -> None:
    items, truth = items_and_truth
    merged = items.merge(truth, on="item_id").merge(catalog, on="catalog_id", suffixes=("", "_catalog"))
    with_gtin = merged.dropna(subset=["gtin", "gtin_catalog"])
    assert (with_gtin["gtin"].str.lstrip("0") == with_gtin["gtin_catalog"].str.lstrip("0")).all()
    assert (with_gtin["gtin"] != with_gtin["gtin_catalog"]).any()


@pytest.mark.parametrize("share", [0.0, 0.1, 0.35, 1.0])
def test_unmatched_share_is_honoured(catalog: pd.DataFrame, share: float) -> None:
    items, truth = generate_items(catalog, 400, seed=11, unmatched_share=share)
    assert abs(truth["catalog_id"].isna().mean() - share) <= 1 / 400


def test_truth_references_existing_catalog_rows(catalog: pd.DataFrame, items_and_truth) -> None:
    _, truth = items_and_truth
    matched = truth["catalog_id"].dropna()
    assert matched.isin(catalog["catalog_id"]).all()
    assert abs(truth["catalog_id"].isna().mean() - 0.1) <= 1 / 1_500


def test_unmatched_items_are_absent_from_catalog(catalog: pd.DataFrame, items_and_truth) -> None:
    items, truth = items_and_truth
    unmatched = items[truth["catalog_id"].isna()]
    assert not unmatched["part_number"].dropna().isin(catalog["part_number"]).any()
    known = set(catalog["gtin"].dropna().str.lstrip("0"))
    assert not any(g.lstrip("0") in known for g in unmatched["gtin"].dropna())


def test_item_list_is_messy(catalog: pd.DataFrame, items_and_truth) -> None:
    items, truth = items_and_truth
    assert 0.33 < items["part_number"].isna().mean() < 0.47
    matched = items.merge(truth, on="item_id").merge(catalog, on="catalog_id", suffixes=("", "_catalog"))
    given = matched.dropna(subset=["part_number"])
    garbled = (given["part_number"] != given["part_number_catalog"]).mean()
    assert 0.1 < garbled < 0.25  # ~10% of all items, i.e. ~17% of those that carry one
    assert not matched["description"].isin(catalog["description"]).all()
    model_only = (matched["description"] == matched["part_number_catalog"]).mean()
    assert 0.02 < model_only < 0.1
    assert items["description"].str.contains(r"\bCdls\b|\bSS\b|\bPk\b|\bBatt", case=False).any()
    assert (items["description"] == items["description"].str.upper()).mean() > 0.15
    assert 0.05 < items["manufacturer"].isna().mean() < 0.2


def test_near_duplicate_families_exist(catalog: pd.DataFrame) -> None:
    """Two rows of one maker whose titles differ in exactly one token (64GB vs 128GB, v2 vs v3)."""
    titles = [d.removesuffix(f" - {pn}") for d, pn in zip(catalog["description"], catalog["part_number"], strict=True)]
    groups: dict[tuple, set[int]] = defaultdict(set)
    for i, (maker, title) in enumerate(zip(catalog["manufacturer"], titles, strict=True)):
        tokens = title.split(" ")
        for j in range(len(tokens)):
            groups[(maker, len(tokens), j, tuple(tokens[:j] + tokens[j + 1:]))].add(i)
    in_family = set().union(*(rows for rows in groups.values() if len(rows) > 1))
    assert len(in_family) / len(catalog) > 0.5
    differing = {
        tuple(sorted({titles[i].split(" ")[key[2]] for i in rows}))
        for key, rows in groups.items()
        if len(rows) > 1
    }
    flat = " ".join(" ".join(d) for d in differing)
    for pattern in (r"\d+GB", r"\d+-Pack", r"v[23]", r"Small|Medium|Large"):
        assert re.search(pattern, flat), pattern


def test_bundled_sample_matches_the_documented_call(tmp_path: Path) -> None:
    paths = write_sample(tmp_path, n_catalog=400, n_items=120, seed=7)
    assert sorted(paths) == ["catalog", "items", "truth"]
    for name, path in paths.items():
        assert path.read_bytes() == (SAMPLE_DIR / f"{name}.csv").read_bytes(), f"{name}.csv drifted"
    readme = (SAMPLE_DIR / "README.md").read_text(encoding="utf-8")
    assert "write_sample(Path(\"matching_pipeline/sample\"), n_catalog=400, n_items=120, seed=7)" in readme


def test_bundled_sample_round_trips_through_csv() -> None:
    catalog = pd.read_csv(SAMPLE_DIR / "catalog.csv", dtype=str, keep_default_na=False)
    truth = pd.read_csv(SAMPLE_DIR / "truth.csv", dtype=str, keep_default_na=False)
    expected = generate_catalog(400, seed=7)
    assert catalog["gtin"].tolist() == expected["gtin"].fillna("").tolist()
    matched = truth.loc[truth["catalog_id"] != "", "catalog_id"]
    assert matched.isin(catalog["catalog_id"]).all()


def test_generate_catalog_scales_to_50k() -> None:
    catalog = generate_catalog(50_000, seed=1)
    assert len(catalog) == 50_000
    assert catalog["part_number"].is_unique
    assert catalog["description"].is_unique
    assert catalog["gtin"].dropna().is_unique


def test_invalid_arguments_are_rejected(catalog: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        generate_catalog(-1)
    with pytest.raises(ValueError):
        generate_items(catalog, 10, unmatched_share=1.5)
    with pytest.raises(ValueError):
        generate_items(catalog.iloc[:0], 10)
