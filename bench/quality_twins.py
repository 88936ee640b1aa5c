"""Precision of the enhanced stage on the generated near-twin stress set, by twin class.

Usage: python bench/quality_twins.py [--per-class 60] [--seed 0] [--filler 2000]

Exits non-zero when a twin is accepted in place of its sibling or precision falls below 0.99.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from matching_pipeline.core.catalog import CatalogIndex  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402
from matching_pipeline.sample.twins import generate_twins  # noqa: E402

TARGET_PRECISION = 0.99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filler", type=int, default=2_000)
    args = parser.parse_args()
    catalog, items = generate_twins(args.per_class, args.seed, args.filler)
    started = time.perf_counter()
    decisions = match_enhanced(items, CatalogIndex.build(catalog))
    elapsed = time.perf_counter() - started
    frame = items.assign(matched=[d.catalog_id for d in decisions])
    accepted = frame[frame["matched"].notna()]
    right = accepted["matched"] == accepted["truth"]
    swapped = frame["matched"] == frame["twin_id"]
    print(f"items {len(items)}  catalog {len(catalog)}  {elapsed:.1f}s")
    print(f"{'class':<12} {'items':>5} {'accepted':>8} {'wrong':>5} {'twin':>5}")
    for kind, group in frame.groupby("twin_class", sort=False):
        got = group[group["matched"].notna()]
        print(f"{kind:<12} {len(group):5d} {len(got):8d} {int((got['matched'] != got['truth']).sum()):5d} "
              f"{int((group['matched'] == group['twin_id']).sum()):5d}")
    precision = right.mean() if len(accepted) else 1.0
    print(f"accepted {len(accepted)} of {len(items)}  precision {precision:.4f}  twins accepted {int(swapped.sum())}")
    ok = precision >= TARGET_PRECISION and not swapped.any()
    print("all targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
