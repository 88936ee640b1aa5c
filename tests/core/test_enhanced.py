import pandas as pd
import pytest

from matching_pipeline.core.catalog import CatalogIndex
from matching_pipeline.core.enhanced import EnhancedSettings, match_enhanced


@pytest.fixture(scope="module")
def index() -> CatalogIndex:
    catalog = pd.DataFrame(
        {
            "catalog_id": ["tv40", "tv46", "switch", "ink-m", "ink-c", "pod16", "pod32", "paper", "fryer", "ps-a", "ps-b"],
            "description": [
                "Sony Bravia 40in LCD HDTV - KDL40V4100",
                "Sony Bravia 46in LCD HDTV - KDL46V4100",
                "Netgear ProSafe 5 Port 10/100 Desktop Switch",
                "Canon Magenta Ink Tank - CLI8M",
                "Canon Cyan Ink Tank - CLI8C",
                "Apple iPod nano 16GB Silver",
                "Apple iPod nano 32GB Silver",
                "Sony Digital Photo Printer Paper 40 Pack - SVMF40P",
                "Waring Professional Cool-Touch Deep Fryer",
                "Acme Power Supply 500W",
                "Zenith Power Supply 500W",
            ],
            "part_number": [None, None, "FS105", None, None, None, None, None, None, "PS-500", "PS-500"],
            "manufacturer": ["Sony", "Sony", "Netgear", "Canon", "Canon", "Apple", "Apple", "Sony", "Waring", "Acme", "Zenith"],
            "gtin": [None, None, "036000291452", None, None, None, None, None, None, None, None],
        }
    )
    return CatalogIndex.build(catalog)


def decide(index, rows, **settings):
    items = pd.DataFrame(rows)
    return match_enhanced(items, index, EnhancedSettings(**settings))


def test_cascade_methods_and_input_order(index):
    decisions = decide(
        index,
        [
            {"item_id": "a", "description": "some switch", "gtin": "36000291452", "part_number": None},
            {"item_id": "b", "description": "netgear desktop switch", "gtin": None, "part_number": "fs-105"},
            {"item_id": "c", "description": "Sony LCD TV KDL-46V4100", "gtin": "", "part_number": float("nan")},
            {"item_id": "d", "description": "Waring Pro Cool Touch Deep Fryer", "gtin": None, "part_number": None},
        ],
    )
    assert [(d.item_id, d.catalog_id, d.method) for d in decisions] == [
        ("a", "switch", "gtin"),
        ("b", "switch", "part_number"),
        ("c", "tv46", "model_number"),
        ("d", "fryer", "fuzzy"),
    ]
    assert all(0.0 <= d.confidence <= 1.0 for d in decisions)
    assert decisions[2].evidence["rule"] == "model_number" and decisions[2].evidence["identifier"] == "KDL46V4100"
    assert decisions[3].evidence["margin"] >= 0.15


def test_ambiguous_part_number_uses_manufacturer_else_stays_open(index):
    by_maker, ambiguous = decide(
        index,
        [
            {"item_id": "x", "description": "power supply", "part_number": "PS500", "manufacturer": "Zenith"},
            {"item_id": "y", "description": "power supply", "part_number": "PS500", "manufacturer": None},
        ],
    )
    assert (by_maker.catalog_id, by_maker.method) == ("ps-b", "manufacturer_part_number")
    assert ambiguous.catalog_id is None and ambiguous.method == "none"
    assert {c.catalog_id for c in ambiguous.candidates[:2]} == {"ps-a", "ps-b"}


def test_capacity_conflict_blocks_an_otherwise_clear_fuzzy_accept(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Apple iPod nano 64GB Silver"}], threshold_margin=0.0)
    assert decision.catalog_id is None
    assert decision.evidence["rejected"] == "conflict"
    assert decision.evidence["conflict"].startswith("capacity")


def test_identifier_accept_is_checked_for_conflicts(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Sony Bravia 52in LCD HDTV - KDL40V4100"}])
    assert decision.catalog_id is None
    assert decision.evidence["identifier_conflict"].startswith("length")
    assert decision.candidates[0].catalog_id == "tv40"


def test_exact_identifier_tolerates_pack_size_stated_on_one_side(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Sony Print Paper - SVMF40P"}])
    assert (decision.catalog_id, decision.method) == ("paper", "model_number")


def test_margin_rule_refuses_near_twins(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Sony Bravia LCD HDTV"}])
    assert decision.catalog_id is None
    assert decision.evidence["rejected"] == "below threshold_margin"
    assert {c.catalog_id for c in decision.candidates[:2]} == {"tv40", "tv46"}


def test_no_match_keeps_top_k_candidates_and_best_score(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "garden hose 50 ft"}], top_k=3, rescore_k=5)
    assert decision.catalog_id is None and decision.method == "none"
    assert len(decision.candidates) == 3
    assert decision.confidence == decision.candidates[0].score < 0.5


def test_a_match_keeps_itself_and_its_nearest_rivals_only(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Sony Bravia LCD TV KDL-46V4100"}], top_k_matched=2)
    assert decision.catalog_id == "tv46"
    assert [c.catalog_id for c in decision.candidates] == ["tv46", "tv40"]


def test_model_family_puts_the_family_in_front_without_deciding(index):
    (decision,) = decide(index, [{"item_id": "i", "description": "Canon CLI-8 Red Ink - 0626B002"}])
    assert decision.catalog_id is None
    assert {c.catalog_id for c in decision.candidates[:2]} == {"ink-m", "ink-c"}


def test_optional_columns_may_be_absent(index):
    decisions = decide(index, [{"item_id": 7, "description": "Netgear ProSafe 5 Port Desktop Switch"}])
    assert (decisions[0].item_id, decisions[0].catalog_id) == ("7", "switch")


def test_settings_are_validated():
    with pytest.raises(ValueError):
        EnhancedSettings(weight_tfidf=0.9)
    with pytest.raises(ValueError):
        EnhancedSettings(top_k=10, rescore_k=5)
    with pytest.raises(ValueError):
        EnhancedSettings(top_k=5, top_k_matched=6)


def test_evidence_lists_a_crowded_identifier_hit_by_count():
    # A family token shared by many entries: the evidence names ten and counts them all.
    colours = [f"{a}{b}" for a in "BCMY" for b in "KLR"]
    catalog = pd.DataFrame(
        {"catalog_id": [f"ink-{c}" for c in colours], "description": [f"Canon Ink Tank {c} - CLI8{c}" for c in colours]}
    )
    (decision,) = decide(CatalogIndex.build(catalog), [{"item_id": "i", "description": "Canon CLI-8 ink"}])
    (hit,) = decision.evidence["identifiers"]
    assert hit["rule"] == "model_family" and hit["catalog_id_count"] == 12 and len(hit["catalog_ids"]) == 10
