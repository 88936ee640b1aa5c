"""Attribute-aware conflicts: every class of wrong accept a careful person would catch from text."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from matching_pipeline.core import attributes
from matching_pipeline.core.attributes import Vocabulary, maker_conflict, read_attributes, title_maker, use_vocabulary
from matching_pipeline.core.catalog import document_text
from matching_pipeline.core.enhanced import _numbers
from matching_pipeline.core.identifiers import extract_features, extract_model_numbers, find_conflict
from matching_pipeline.core.normalize import (
    fold_unicode,
    normalize_gtin,
    normalize_manufacturer,
    normalize_part_number,
    normalize_text,
)
from matching_pipeline.core.web_evidence import build_queries, stated_codes


@pytest.mark.parametrize(
    ("item", "entry", "kind"),
    [
        # another maker's product sharing a model token
        ("XFX GeForce 8800GT 512MB", "EVGA GeForce 8800GT 512MB", "maker"),
        ("Belkin HDMI Cable 2-Meter", "Monster HDMI Cable 2 Meter", "maker"),
        # accessory or bundle instead of the product
        ("Case for Apple iPod nano", "Apple iPod nano 4GB Silver", "accessory"),
        ("Canon PowerShot SD1000 Digital Camera", "Canon PowerShot SD1000 Digital Camera Kit with Case", "bundle"),
        ("Epson Stylus C88 Printer", "Epson Stylus C88 Printer Value Bundle", "bundle"),
        ("Battery for Canon SD1000", "Canon SD1000 Digital Camera", "accessory"),
        # colour
        ("HP 02 Magenta Ink Cartridge", "HP 02 Yellow Ink Cartridge", "colour"),
        ("Canon CLI-8 Photo Black Ink", "Canon CLI-8 Black Ink", "colour"),
        ("Speck iPod Case Blue", "Speck iPod Case Pink", "colour"),
        # capacity, size, length, count
        ("Avery Labels Letter Size", "Avery Labels Legal Size", "size"),
        ("Netgear 4-Port Switch", "Netgear 3 Port Switch", "ports"),
        ("Sony 10 ft HDMI Cable", "Sony 6ft HDMI Cable", "length"),
        ("Apple iPod nano 8GB", "Apple iPod nano 16 GB", "capacity"),
        ("Sony 42\" LCD TV", "Sony 46in LCD TV", "length"),
        ("Post-it Notes 60 Sheets", "Post-it Notes 150 Sheets", "sheets"),
        # edition
        ("Microsoft Office 2007 Academic", "Microsoft Office 2007", "edition"),
        ("Adobe Photoshop CS3 Upgrade", "Adobe Photoshop CS3", "edition"),
        ("Quicken Deluxe 2007", "Quicken Premier 2007", "edition"),
        ("Windows Vista Home Premium", "Windows Vista Ultimate", "edition"),
        ("Reader Rabbit for Kids", "Reader Rabbit", "edition"),
        ("SQL Server 2005 Workstation", "SQL Server 2005 Mobile", "edition"),
        # version or year
        ("Microsoft Office 2004 for Mac", "Microsoft Office 2007 for Mac", "year"),
        ("Adobe Acrobat 6.0 Standard", "Adobe Acrobat 7.0 Standard", "release"),
        ("Photoshop Elements 6 for Windows", "Photoshop Elements 7 for Windows", "number"),
        ("Canon EOS 5D Mark II", "Canon EOS 5D", "sequel"),
        # condition and provenance
        ("Refurbished Canon PowerShot SD1000", "Canon PowerShot SD1000", "condition"),
        ("Compatible Toner Cartridge for HP 12A", "HP 12A Toner Cartridge", "condition"),
        ("Remanufactured Lexmark 16 Ink", "Lexmark 16 Ink", "condition"),
        # a different kind of thing with a similar title
        ("Photoshop Elements 6 For Dummies", "Adobe Photoshop Elements 6", "publication"),
        ("Excel 2007 Bible", "Microsoft Excel 2007", "publication"),
        # platform
        ("Sony PlayStation 2 DVD Remote", "Sony PS3 Blu-ray Remote", "platform"),
        ("Madden NFL 08 Xbox 360", "Madden NFL 08 Wii", "platform"),
        ("Norton Antivirus 2008 Windows", "Norton Antivirus 2008 Mac", "platform"),
    ],
)
def test_each_class_of_near_twin_conflicts(item: str, entry: str, kind: str) -> None:
    reason = find_conflict(item, entry)
    assert reason is not None and reason.startswith(kind), reason
    # symmetric: the same pair read the other way round conflicts too
    assert find_conflict(entry, item) is not None


@pytest.mark.parametrize(
    ("item", "entry"),
    [
        ("Sony Bravia 40\" LCD TV", "Sony Bravia 40in LCD TV Black"),  # one side silent on colour
        ("Samsung Home Theater With iPod Dock", "Samsung 2.1 Channel Home Theater System"),  # included, not the kind
        ("Peerless Adjustable TV Wall Mount", "Peerless Wall TV Mounts In Black"),  # plural
        ("Microsoft Office Home and Student 2007", "Office Home & Student 2007"),
        ("USB 2.0 Hub, Mac compatible", "USB 2.0 Hub"),  # "compatible" describing a feature
        ("LEGO Star Wars 2: The Original Trilogy", "LEGO Star Wars II: The Original Trilogy"),
        ("Canon Speedlite 580EX II", "Canon 580EXII Speedlite"),
        ("Frigidaire Dishwasher with 5 Wash Cycles", "Frigidaire 24in Dishwasher"),  # a count, not a name
        ("Sony HDMI cable 6ft (1.8m)", "Sony HDMI cable 1.8 m"),  # units normalised
        ("Monster Cable HDMI 1000", "Monster HDMI 1000 cable"),
    ],
)
def test_agreeing_or_silent_listings_do_not_conflict(item: str, entry: str) -> None:
    assert find_conflict(item, entry) is None


def test_makers_from_fields_agree_across_spellings_and_aliases() -> None:
    vocabulary = attributes.active_vocabulary()
    assert maker_conflict(vocabulary.canonical_maker("Hewlett-Packard"), vocabulary.canonical_maker("HP")) is None
    assert maker_conflict(vocabulary.canonical_maker("LG Electronics"), vocabulary.canonical_maker("LG")) is None
    assert maker_conflict(vocabulary.canonical_maker("Speck Products"), "speck") is None
    assert maker_conflict(vocabulary.canonical_maker("Tom Tom"), vocabulary.canonical_maker("TomTom")) is None
    assert maker_conflict(vocabulary.canonical_maker("Sony"), vocabulary.canonical_maker("Canon")) == "maker: sony vs canon"
    assert vocabulary.canonical_maker("Unknown") is None and vocabulary.canonical_maker("") is None


def test_field_makers_override_the_title() -> None:
    reason = find_conflict("GeForce 8800GT 512MB", "GeForce 8800GT 512MB", makers=("xfx", "evga"))
    assert reason == "maker: xfx vs evga"


def test_a_maker_named_after_for_is_not_the_products_maker() -> None:
    vocabulary = attributes.active_vocabulary()
    assert title_maker(read_attributes("Case for Canon PowerShot", vocabulary).lead, vocabulary) is None
    assert title_maker(read_attributes("Terk XM Antenna", vocabulary).lead, vocabulary) is None
    assert title_maker(read_attributes("Canon PowerShot SD1000", vocabulary).lead, vocabulary) == "canon"


def test_vocabulary_is_extended_from_a_folder(tmp_path: Path) -> None:
    (tmp_path / "colours.txt").write_text("chartreuse: yellow green\n", encoding="utf-8")
    (tmp_path / "makers.txt").write_text("acme widgets: acme\n", encoding="utf-8")
    default = attributes.active_vocabulary()
    assert find_conflict("Acme Lamp Chartreuse", "Acme Lamp Silver") is None
    try:
        use_vocabulary(Vocabulary.load(tmp_path))
        assert find_conflict("Acme Lamp Chartreuse", "Acme Lamp Silver") == "colour: chartreuse vs silver"
        assert title_maker(extract_features("Acme Lamp").attributes.lead, attributes.active_vocabulary()) == "acme widgets"
    finally:
        use_vocabulary(default)
    assert find_conflict("Acme Lamp Chartreuse", "Acme Lamp Silver") is None


def test_missing_vocabulary_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        Vocabulary.load(tmp_path / "nope")


LONG_WORDS = [
    "a" * 1_000_000,
    "1" * 1_000_000,
    "A1-" * 333_333,
    ("x" * 999_999) + "1",
    " ".join(["word"] * 200_000),
    "\u00e9" * 500_000,
]


@pytest.mark.parametrize("text", LONG_WORDS, ids=["letters", "digits", "alnum-dash", "letters-digit", "words", "accents"])
def test_every_normaliser_and_extractor_is_linear_on_a_megabyte(text: str) -> None:
    """A 1 MB description must not hang a stage (a backtracking regex took 19 s on 40 kB)."""
    extract_features.cache_clear()
    _numbers.cache_clear()
    functions = [
        fold_unicode,
        normalize_text,
        normalize_part_number,
        normalize_gtin,
        normalize_manufacturer,
        document_text,
        extract_model_numbers,
        extract_features,
        _numbers,
        lambda t: find_conflict(t, "Sony KDL-40V4100 40in LCD TV Black"),
        lambda t: read_attributes(t, attributes.active_vocabulary()),
        lambda t: build_queries({"item_id": "x", "description": t, "part_number": t[:1000], "manufacturer": t[:100]}),
        lambda t: stated_codes(t, t[:1000]),
    ]
    for function in functions:
        started = time.perf_counter()
        function(text)
        elapsed = time.perf_counter() - started
        assert elapsed < 1.0, f"{getattr(function, '__name__', function)} took {elapsed:.2f}s"
