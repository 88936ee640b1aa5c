"""Speed of the catalog index at the scale of a large customer list.

Usage: python bench/speed_retrieval.py [n_catalog] [n_items]   (defaults 50000 21737)

Synthetic product titles (brand, family, kind, capacity, colour, model number) with a vocabulary
of thousands of words, as a real 50k-entry electronics catalog has. Prints seconds per phase and peak RSS.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from matching_pipeline.core.catalog import CatalogIndex  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402

KINDS = (
    "LCD HDTV|Plasma HDTV|Digital Camera|Digital SLR Camera|Camcorder|Wireless Router|Ethernet Switch|"
    "Home Theater System|Ink Cartridge|Toner|Headphones|Earbuds|GPS Navigator|Laptop Bag|Memory Card|"
    "USB Flash Drive|External Hard Drive|Monitor|Keyboard|Mouse|Speaker System|AV Receiver|Blu-ray Player|"
    "DVD Recorder|Microwave Oven|Refrigerator|Dishwasher|Coffee Maker|Vacuum|Cordless Phone|MP3 Player"
).split("|")
COLOURS = "Black Silver White Red Blue Gray Titanium Pink Green".split()
SYLLABLES = "ka to mi ra ne so lu vi pe da go zu ri fo be ch tr an el ix on ar us".split()


def _words(n: int, rng: np.random.Generator) -> list[str]:
    """Pseudo brand and family names: a real 50k catalog has thousands of distinct words."""
    return ["".join(rng.choice(SYLLABLES, rng.integers(2, 4))).capitalize() for _ in range(n)]


def titles(n: int, rng: np.random.Generator) -> list[str]:
    brands, families = _words(800, rng), _words(5000, rng)
    pick = lambda options: rng.choice(options, n)  # noqa: E731
    numbers = rng.integers(100, 99_999, n)
    sizes = rng.choice([16, 32, 40, 46, 52, 64, 128, 500], n)
    return [
        f"{b} {f} {k} {s}GB {c} - {b[:2].upper()}{num}{c[0]}"
        for b, f, k, s, c, num in zip(pick(brands), pick(families), pick(KINDS), sizes, pick(COLOURS), numbers, strict=True)
    ]


def main(n_catalog: int, n_items: int) -> None:
    rng = np.random.default_rng(0)
    catalog = pd.DataFrame({"catalog_id": [f"c{i}" for i in range(n_catalog)], "description": titles(n_catalog, rng)})
    # Items: catalog titles with words dropped and case changed, as customer lists look.
    picks = rng.integers(0, n_catalog, n_items)
    descriptions = [" ".join(w for w in catalog.description[i].split() if rng.random() > 0.2).lower() for i in picks]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "description": descriptions})

    timings = {}
    started = time.perf_counter()
    index = CatalogIndex.build(catalog)
    timings["build"] = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.pkl"
        started = time.perf_counter()
        index.save(path)
        timings["save"] = time.perf_counter() - started
        started = time.perf_counter()
        index = CatalogIndex.load(path)
        timings["load"] = time.perf_counter() - started
    started = time.perf_counter()
    index.retrieve(items["description"].tolist(), k=10)
    timings["retrieve top-10"] = time.perf_counter() - started
    started = time.perf_counter()
    decisions = match_enhanced(items, index)
    timings["match_enhanced"] = time.perf_counter() - started

    print(f"catalog {n_catalog}  items {n_items}  matched {sum(d.matched for d in decisions) / n_items:.1%}")
    for phase, seconds in timings.items():
        print(f"  {phase:<16} {seconds:6.2f} s")
    print(f"  peak RSS         {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:6.0f} MB")


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    main(*args) if args else main(50_000, 21_737)
