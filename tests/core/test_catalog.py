import pandas as pd
import pytest

from matching_pipeline.core.catalog import CatalogIndex, IndexSettings
from matching_pipeline.core.models import Candidate


@pytest.fixture(scope="module")
def catalog() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "catalog_id": ["c1", "c2", "c3", "c4", "c5"],
            "description": [
                "Sony Bravia 40in LCD HDTV - KDL40V4100",
                "Sony Bravia 46in LCD HDTV - KDL46V4100",
                "Netgear ProSafe 5-Port Switch",
                "Canon Magenta Ink Tank - CLI8M",
                "Canon Cyan Ink Tank - CLI8C",
            ],
            "part_number": [None, None, "FS105", "X-1", "X-1"],
            "manufacturer": ["Sony", "Sony", "Netgear", "Canon", "Canon Inc."],
            "gtin": ["4006381333931", None, "036000291452", None, pd.NA],
            "price": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )


@pytest.fixture(scope="module")
def index(catalog) -> CatalogIndex:
    return CatalogIndex.build(catalog, version="v1")


def test_retrieve_ranks_the_right_entry_first(index):
    results = index.retrieve(["sony kdl-46v4100 bravia", "netgear prosafe switch"], k=3)
    assert [found[0].catalog_id for found in results] == ["c2", "c3"]
    assert all(len(found) == 3 for found in results)
    assert all(1.0 >= a.score >= b.score >= 0.0 for found in results for a, b in zip(found, found[1:], strict=False))


def test_retrieve_returns_candidates_with_entry_fields(index):
    best = index.retrieve(["Canon CLI-8M magenta"], k=1)[0][0]
    assert best == Candidate("c4", best.score, "Canon Magenta Ink Tank - CLI8M", "X-1", "Canon")


def test_identifier_lookups(index):
    assert index.find_by_gtin("4006381333931") == ["c1"]
    assert index.find_by_gtin("36000291452") == ["c3"]  # leading zero lost
    assert index.find_by_gtin("4006381333932") == []  # bad check digit
    assert index.find_by_part_number("fs-105") == ["c3"]
    assert index.find_by_part_number("X1") == ["c4", "c5"]
    assert index.find_by_part_number("X1", manufacturer="CANON CORP") == ["c4", "c5"]
    assert index.find_by_model_number("kdl-40v4100") == ["c1"]
    assert index.find_by_model_family("CLI8") == ["c4", "c5"]


def test_model_numbers_shared_by_entries_identify_nothing(catalog):
    twins = pd.concat([catalog, catalog.assign(catalog_id=lambda f: f["catalog_id"] + "b")])
    assert CatalogIndex.build(twins).find_by_model_number("KDL40V4100") == []


def test_find_by_identifier_tries_gtin_then_part_then_model(index):
    assert index.find_by_identifier("0036000291452") == ["c3"]
    assert index.find_by_identifier("FS105") == ["c3"]
    assert index.find_by_identifier("KDL46V4100") == ["c2"]
    assert index.find_by_identifier("nothing") == []


def test_entry_and_candidate(index):
    assert index.entry("c3")["price"] == 3.0
    assert index.candidate("c3", 0.5) == Candidate("c3", 0.5, "Netgear ProSafe 5-Port Switch", "FS105", "Netgear")


def test_optional_columns_may_be_absent():
    index = CatalogIndex.build(pd.DataFrame({"catalog_id": [1, 2], "description": ["a widget", "a gadget"]}))
    assert index.retrieve(["gadget"], k=1)[0][0].catalog_id == "2"
    assert index.find_by_gtin("4006381333931") == []


def test_build_rejects_bad_catalogs():
    with pytest.raises(ValueError, match="unique"):
        CatalogIndex.build(pd.DataFrame({"catalog_id": ["a", "a"], "description": ["x", "y"]}))
    with pytest.raises(ValueError, match="description"):
        CatalogIndex.build(pd.DataFrame({"catalog_id": ["a"]}))


def test_save_load_round_trip(index, tmp_path):
    path = tmp_path / "index.pkl"
    index.save(path)
    loaded = CatalogIndex.load(path)
    assert loaded.version == "v1" and loaded.settings == index.settings
    query = ["sony bravia 46 inch", "canon cyan ink"]
    assert loaded.retrieve(query, 3) == index.retrieve(query, 3)
    assert loaded.find_by_identifier("FS105") == ["c3"]
    pd.testing.assert_frame_equal(loaded.catalog, index.catalog)


def test_settings_fingerprint_changes_with_settings():
    assert IndexSettings().fingerprint() == IndexSettings().fingerprint()
    assert IndexSettings().fingerprint() != IndexSettings(ngram_range=(3, 5)).fingerprint()


def test_retrieval_finds_each_of_many_near_identical_entries():
    n = 1_000
    catalog = pd.DataFrame({"catalog_id": range(n), "description": [f"product {i} model AB{i:05d}" for i in range(n)]})
    results = CatalogIndex.build(catalog).retrieve([f"model ab{i:05d}" for i in range(n)], k=10)
    assert sum(found[0].catalog_id == str(i) for i, found in enumerate(results)) > 0.95 * n
