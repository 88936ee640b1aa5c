import pytest

from matching_pipeline.core.attributes import Measure
from matching_pipeline.core.identifiers import extract_features, extract_model_numbers, find_conflict, same_model


def test_model_numbers_join_separators_and_skip_measurements():
    text = "Sony KDL-40V4100 40in LCD 16GB 1080p 2-pack 14-42mm - KDL40V4100/B"
    assert extract_model_numbers(text) == ["KDL40V4100", "KDL40V4100B"]


def test_unit_after_letters_is_a_model_suffix():
    assert extract_model_numbers("Canon CLI-8M Ink") == ["CLI8M"]


def test_models_after_for_are_compatibility_not_identity():
    text = "Canon Ink Cartridge For PIXMA iP6210D Printers - 0619B002"
    assert extract_model_numbers(text) == ["0619B002"]


def test_slash_separates_full_alternatives_only():
    assert extract_model_numbers("TMRBT10/TMRBT10A") == ["TMRBT10", "TMRBT10A"]
    assert extract_model_numbers("MB226LL/A") == ["MB226LLA"]


def test_same_model_allows_short_prefix_or_suffix_only():
    assert same_model("FS105", "FS105NA")
    assert same_model("SDV02GU1A", "RPSDV02GU1A")
    assert not same_model("YHT390BL", "YHT390BK")


@pytest.mark.parametrize(
    ("item", "candidate", "reason"),
    [
        ("Sony Bravia KDL-40V4100", "Sony Bravia KDL-46V4100", "model number"),
        ("Netgear Router v2", "Netgear Router v3", "version"),
        ("Apple iPod 2nd gen", "Apple iPod 3rd generation", "version"),
        ("Bose Acoustimass 5 Series II", "Bose Acoustimass 5 Series III", "version"),
        ("Windows 7 Home Premium", "Windows 7 Professional", "edition"),
        ("Halo 3 Collector's Edition", "Halo 3 Limited Edition", "edition"),
        ("Duracell AA Pack of 4", "Duracell AA 8-pack", "quantity"),
        ("Duracell AA 2-pack", "Duracell AA battery", "quantity"),
        ("Cola can x12", "Cola can", "quantity"),
        ("Apple iPod nano 16GB", "Apple iPod nano 32 GB", "capacity"),
        ('Samsung 42in Plasma', 'Samsung 50" Plasma', "length"),
    ],
)
def test_conflicts(item, candidate, reason):
    assert find_conflict(item, candidate).startswith(reason)


@pytest.mark.parametrize(
    ("item", "candidate"),
    [
        ("Netgear FS105 Switch", "Netgear ProSafe Switch - FS105NA"),
        ("Toshiba 31.5' LCD HDTV", "Toshiba 32' LCD HDTV"),  # marketing rounding
        ("Waring Pro Deep Fryer", "Waring Professional Deep Fryer"),
        ("Escort X50 Radar", "Escort Radar"),  # a model name, not "times 50"
        ("Sony Print Paper", "Sony Print Paper"),
        ("Apple iPod 16GB", "Apple iPod"),  # stated on one side only
    ],
)
def test_no_conflict(item, candidate):
    assert find_conflict(item, candidate) is None


def test_unstated_pack_size_can_be_left_open():
    item, candidate = "Sony Print Paper - SVMF40P", "Sony Paper 40 Pack - SVMF40P"
    assert find_conflict(item, candidate) is not None
    assert find_conflict(item, candidate, unstated_quantity_is_one=False) is None


def test_features_are_comparable_values():
    features = extract_features("Acme Widget v2.0 Deluxe Edition 2 TB (twin pack)")
    assert features.versions == {("v", "2")}
    assert features.editions == {"deluxe"}
    assert features.attributes.measures == {Measure("capacity", 2000.0)}
    assert features.quantity == 2
