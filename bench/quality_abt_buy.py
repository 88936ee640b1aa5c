"""Quality of the enhanced stage on Abt-Buy: coverage, precision, and what the AI stage inherits.

Usage: python bench/quality_abt_buy.py /work/shared/datasets/abt_buy

Items are Buy.csv (short, messy titles), the catalog is Abt.csv. Exits non-zero when a target is
missed, so it can guard changes to the matcher's defaults. The defaults are not tuned for this
set alone (see EnhancedSettings); this script only checks they still hold here.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not

from matching_pipeline.core.catalog import CatalogIndex  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402

TARGET_COVERAGE = 0.70
TARGET_PRECISION = 0.99
TARGET_UNMATCHED_RECALL_AT_K = 0.97


def load(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, set[tuple[str, str]]]:
    buy = pd.read_csv(root / "Buy.csv", dtype=str)
    abt = pd.read_csv(root / "Abt.csv", dtype=str, encoding="latin-1")
    mapping = pd.read_csv(root / "abt_buy_perfectMapping.csv", dtype=str)
    items = pd.DataFrame({"item_id": buy["id"], "description": buy["name"], "manufacturer": buy["manufacturer"]})
    catalog = pd.DataFrame({"catalog_id": abt["id"], "description": abt["name"], "price": abt["price"]})
    truth = set(zip(mapping["idBuy"], mapping["idAbt"], strict=True))
    return items, catalog, truth


def main(root: Path) -> int:
    items, catalog, truth = load(root)
    started = time.perf_counter()
    index = CatalogIndex.build(catalog, version="abt")
    built = time.perf_counter()
    decisions = match_enhanced(items, index)
    matched_at = time.perf_counter()

    matched = [d for d in decisions if d.matched]
    unmatched = [d for d in decisions if not d.matched]
    correct = [d for d in matched if (d.item_id, d.catalog_id) in truth]
    found = [d for d in unmatched if any((d.item_id, c.catalog_id) in truth for c in d.candidates)]
    coverage = len(matched) / len(decisions)
    precision = len(correct) / len(matched) if matched else 1.0
    recall_k = len(found) / len(unmatched) if unmatched else 1.0

    print(f"items {len(items)}  catalog {len(catalog)}  build {built - started:.2f}s  match {matched_at - built:.2f}s")
    print(f"coverage {coverage:.3f} ({len(matched)})  precision {precision:.4f}  ({len(matched) - len(correct)} wrong)")
    print(f"unmatched {len(unmatched)}: true match among saved candidates {recall_k:.3f} ({len(found)})")
    methods = Counter(d.method for d in decisions)
    right = Counter(d.method for d in correct)
    for method, count in methods.most_common():
        share = f"precision {right[method] / count:.4f}" if method != "none" else ""
        print(f"  {method:<26} {count:5d}  {share}")
    reasons = Counter(d.evidence.get("rejected", "") for d in unmatched)
    print("  unmatched because:", dict(reasons))

    missed = []
    if coverage < TARGET_COVERAGE:
        missed.append(f"coverage {coverage:.3f} < {TARGET_COVERAGE}")
    if precision < TARGET_PRECISION:
        missed.append(f"precision {precision:.4f} < {TARGET_PRECISION}")
    if recall_k < TARGET_UNMATCHED_RECALL_AT_K:
        missed.append(f"unmatched recall@k {recall_k:.3f} < {TARGET_UNMATCHED_RECALL_AT_K}")
    print("TARGETS MISSED: " + "; ".join(missed) if missed else "all targets met")
    return 1 if missed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
