"""A stress set of near twins: pairs of catalog entries that differ in one attribute only.

Every class of wrong accept the matcher must refuse has its own twins (another maker's product
with the same model token, accessory and bundle against the product, colour, capacity and
size, edition, version and year, condition, a book about a program, platform), mixed into a
realistic generated catalog. For each pair there is an item for each sibling, described the
way customers do (reordered, lower-cased, maker moved to its field); and for a third of the
pairs the item's own product is missing from the catalog, so the only close entry is the
twin and the right answer is "no match". The right answers are known, so tests and benchmarks
can assert that no twin is ever auto-accepted in place of its sibling.

Names are invented from syllables and drawn at random: nothing here mirrors a real listing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matching_pipeline.sample.generator import generate_catalog

TWIN_CLASSES: tuple[str, ...] = (
    "maker",
    "accessory",
    "bundle",
    "colour",
    "measure",
    "edition",
    "version",
    "condition",
    "publication",
    "platform",
)

_MAKERS = ("Sony", "Canon", "Belkin", "Logitech", "Samsung", "Panasonic", "Netgear", "Epson", "Garmin", "Philips",
           "Kingston", "Targus", "Brother", "Toshiba", "Lexmark", "Adobe", "Corel", "Intuit", "Avery", "Fellowes")
_SYLLABLES = ("vo", "ra", "ten", "lux", "ka", "mi", "zor", "pel", "dia", "qui", "ston", "fa", "rex", "ori", "nu", "bel")
_KINDS = ("Digital Camera", "Wireless Router", "Portable Speaker", "Laser Printer", "GPS Navigator", "Headphones",
          "Camcorder", "Media Player", "Label Maker", "Scanner", "Projector", "Keyboard")
_COLOURS = ("Black", "White", "Silver", "Red", "Blue", "Pink", "Magenta", "Cyan", "Yellow", "Green", "Purple", "Orange")
_EDITIONS = ("Standard", "Professional", "Deluxe", "Premier", "Home", "Ultimate", "Enterprise", "Basic", "Business")
_MARKED_EDITIONS = ("Upgrade", "Academic", "for Kids", "Student Edition", "Competitive Upgrade")
_CONDITIONS = ("Refurbished", "Remanufactured", "Factory Refurbished", "Compatible")
_ACCESSORIES = ("Carrying Case for", "Charger for", "Leather Case for", "Screen Protector for", "Wall Mount for",
                "Skin for", "AC Adapter for")
_BUNDLES = ("Kit with Case", "Value Bundle", "Starter Kit", "Bundle with Memory Card", "Gift Set")
_PUBLICATIONS = ("For Dummies", "Bible", "The Missing Manual", "Step by Step", "Pocket Guide")
_PLATFORMS = ("PS2", "PS3", "Xbox 360", "Wii", "Nintendo DS", "PSP", "Windows", "Mac")
_MEASURES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("USB Flash Drive", "{}GB", (4, 8, 16, 32, 64, 128)),
    ("HDMI Cable", "{} ft", (3, 6, 10, 15, 25)),
    ("Ethernet Switch", "{}-Port", (4, 5, 8, 16, 24)),
    ("Sticky Notes", "{} Sheets", (50, 60, 100, 150, 200)),
    ("LCD Monitor", '{}"', (17, 19, 22, 24, 27)),
    ("Portable Battery", "{}mAh", (2600, 5000, 10000, 20000)),
)
_PAPER = ("Letter Size", "Legal Size", "A4")


@dataclass(frozen=True)
class Twin:
    """Two listings of one product line that differ in ``kind`` alone."""

    kind: str
    maker: str
    base: str
    twin: str
    twin_maker: str | None = None


def _name(rng: np.random.Generator) -> str:
    return "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()


def _model(rng: np.random.Generator) -> str:
    letters = "".join(rng.choice(list("ABCDEFGHJKLMNPRSTVWXZ"), size=2))
    return f"{letters}{int(rng.integers(100, 9999))}"


def _two(rng: np.random.Generator, options: tuple) -> tuple:
    first, second = rng.choice(len(options), size=2, replace=False)
    return options[first], options[second]


def _twin(kind: str, rng: np.random.Generator) -> Twin:
    maker = str(rng.choice(_MAKERS))
    line, model, product = _name(rng), _model(rng), str(rng.choice(_KINDS))
    head = f"{maker} {line} {model} {product}"
    build: dict[str, Callable[[], Twin]] = {
        "maker": lambda: Twin(kind, maker, head, f"{other} {line} {model} {product}", other),
        "accessory": lambda: Twin(kind, maker, head, f"{maker} {rng.choice(_ACCESSORIES)} {line} {model}"),
        "bundle": lambda: Twin(kind, maker, head, f"{head} {rng.choice(_BUNDLES)}"),
        "colour": lambda: Twin(kind, maker, *(f"{head} - {c}" for c in _two(rng, _COLOURS))),
        "measure": lambda: _measure_twin(maker, line, rng),
        "edition": lambda: _edition_twin(maker, line, rng),
        "version": lambda: _version_twin(maker, line, model, product, rng),
        "condition": lambda: Twin(kind, maker, head, f"{rng.choice(_CONDITIONS)} {head}"),
        # a book about the program, by a publisher rather than the maker
        "publication": lambda: Twin(kind, maker, f"{maker} {line} Studio {release}", f"{line} Studio {release} {book}"),
        "platform": lambda: Twin(kind, maker, *(f"{maker} {line} Racing {p}" for p in _two(rng, _PLATFORMS))),
    }
    other = str(rng.choice([m for m in _MAKERS if m != maker]))
    release, book = int(rng.integers(3, 12)), str(rng.choice(_PUBLICATIONS))
    return build[kind]()


def _measure_twin(maker: str, line: str, rng: np.random.Generator) -> Twin:
    if rng.random() < 0.15:
        first, second = _two(rng, _PAPER)
        return Twin("measure", maker, f"{maker} {line} Shipping Labels {first}", f"{maker} {line} Shipping Labels {second}")
    product, pattern, values = _MEASURES[int(rng.integers(len(_MEASURES)))]
    first, second = _two(rng, values)
    return Twin("measure", maker, f"{maker} {line} {pattern.format(first)} {product}", f"{maker} {line} {pattern.format(second)} {product}")


def _edition_twin(maker: str, line: str, rng: np.random.Generator) -> Twin:
    year = int(rng.integers(2004, 2012))
    if rng.random() < 0.5:
        first, second = _two(rng, _EDITIONS)
        return Twin("edition", maker, f"{maker} {line} {year} {first}", f"{maker} {line} {year} {second}")
    return Twin("edition", maker, f"{maker} {line} {year}", f"{maker} {line} {year} {rng.choice(_MARKED_EDITIONS)}")


def _version_twin(maker: str, line: str, model: str, product: str, rng: np.random.Generator) -> Twin:
    form = int(rng.integers(4))
    if form == 0:
        first, second = _two(rng, tuple(range(2003, 2012)))
        return Twin("version", maker, f"{maker} {line} {first}", f"{maker} {line} {second}")
    if form == 1:
        first, second = _two(rng, tuple(range(3, 10)))
        return Twin("version", maker, f"{maker} {line} {first}.0", f"{maker} {line} {second}.0")
    if form == 2:
        first, second = _two(rng, tuple(range(2, 9)))
        return Twin("version", maker, f"{maker} {line} {first} for Windows", f"{maker} {line} {second} for Windows")
    return Twin("version", maker, f"{maker} {line} {model} {product}", f"{maker} {line} {model} {product} II")


def _messy(title: str, maker: str, rng: np.random.Generator) -> tuple[str, str | None]:
    """How a customer lists it: maker moved to its field or kept, case and order changed."""
    field = maker if rng.random() < 0.6 else None
    text = title.removeprefix(f"{maker} ") if field and rng.random() < 0.5 else title
    roll = rng.random()
    if roll < 0.25:
        text = text.lower()
    elif roll < 0.45:
        text = text.upper()
    return text.replace(" - ", " "), field


def generate_twins(per_class: int = 60, seed: int = 0, filler: int = 2_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(catalog, items) of the stress set; ``items.truth`` is the right catalog id or "" for none.

    Items carry ``twin_class`` and ``twin_id`` (the sibling's catalog id) so a test can tell a
    twin accepted in place of its sibling from any other mistake.
    """
    rng = np.random.default_rng(seed)
    catalog_rows: list[dict[str, object]] = []
    item_rows: list[dict[str, object]] = []
    for kind in TWIN_CLASSES:
        for n in range(per_class):
            twin = _twin(kind, rng)
            base_id, twin_id = f"TW-{kind}-{n:03d}-A", f"TW-{kind}-{n:03d}-B"
            orphan = n % 3 == 0  # the item's own product is not in the catalog: the answer is none
            if not orphan:
                catalog_rows.append({"catalog_id": base_id, "description": twin.base, "manufacturer": twin.maker})
            catalog_rows.append({"catalog_id": twin_id, "description": twin.twin, "manufacturer": twin.twin_maker or twin.maker})
            for suffix, title, maker, truth, sibling in (
                ("a", twin.base, twin.maker, "" if orphan else base_id, twin_id),
                ("b", twin.twin, twin.twin_maker or twin.maker, twin_id, base_id),
            ):
                description, field = _messy(title, maker, rng)
                item_rows.append(
                    {
                        "item_id": f"it-{kind}-{n:03d}{suffix}",
                        "description": description,
                        "manufacturer": field,
                        "truth": truth,
                        "twin_class": kind,
                        "twin_id": sibling,
                    }
                )
    fillers = generate_catalog(filler, seed=seed)[["catalog_id", "description", "part_number", "manufacturer"]]
    catalog = pd.concat([pd.DataFrame(catalog_rows), fillers], ignore_index=True)
    catalog = catalog.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return catalog, pd.DataFrame(item_rows)
