"""Precision of the web-search stage on Abt-Buy's leftovers, against search results full of near misses.

    python bench/web_search_precision.py /work/shared/datasets/abt_buy [--near-misses 3] [--true-page-rate 1.0]

Items are Buy.csv, the catalog Abt.csv (as in bench/quality_abt_buy.py). The enhanced stage runs
first; the items it leaves unmatched go through the web-search stage (``WebSearchStage``, the
real httpx client, SearXNG protocol, no model configured) against a local server on 127.0.0.1
in its near-miss mode (``tests.servers.search_server.NearMissWeb``): for each item's query the
server returns the true product's page (it knows Abt-Buy's perfect mapping, as a search engine
knows the web) shuffled among pages of the same maker's nearest other products, an accessory
for the true product and a colour or previous-generation variant of it. Pages carry titles,
snippets (Abt's long descriptions) and URLs, never a catalog id.

Prints precision and coverage of the stage's matches, the outcome counts, how often the true
page was among the results read, and the wrong matches. Exits non-zero when precision is
below the target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402

from bench.quality_abt_buy import load  # noqa: E402
from bench.web_search_throughput import machine  # noqa: E402
from matching_pipeline.core.catalog import CatalogIndex  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402
from matching_pipeline.core.models import Decision  # noqa: E402
from matching_pipeline.defs.assets.web_search import WebSearchStage  # noqa: E402
from matching_pipeline.defs.search_resource import SearchResource  # noqa: E402
from matching_pipeline.results.store import ResultsDatabase  # noqa: E402
from tests.servers.search_server import FakeSearch, NearMissWeb  # noqa: E402

TARGET_PRECISION = 0.95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--near-misses", type=int, default=3, help="same-maker products per result list")
    parser.add_argument("--true-page-rate", type=float, default=1.0, help="share of queries whose true page exists")
    parser.add_argument("--show", type=int, default=20, help="wrong matches to print")
    args = parser.parse_args()

    items, catalog, truth = load(args.root)
    abt = pd.read_csv(args.root / "Abt.csv", dtype=str, encoding="latin-1")
    pages = catalog.assign(details=abt["description"].fillna(""))  # the long text snippets quote
    true_of: dict[str, str] = {}
    for buy, abt_id in sorted(truth):
        true_of.setdefault(buy, abt_id)

    index = CatalogIndex.build(catalog, version="abt")
    enhanced = {d.item_id: d for d in match_enhanced(items, index)}
    left = items[items["item_id"].map(lambda i: not enhanced[i].matched)].reset_index(drop=True)
    known = {row.description: true_of[row.item_id] for row in left.itertuples() if row.item_id in true_of}
    web = NearMissWeb(pages, known, near_misses=args.near_misses, true_page_rate=args.true_page_rate)

    print(f"machine: {machine()}")
    print(f"items {len(items)}, catalog {len(catalog)}; left by the enhanced stage: {len(left)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp, FakeSearch(responder=web) as server:
        db = ResultsDatabase(f"sqlite:///{Path(tmp) / 'results.db'}")
        search = SearchResource(searxng_url=server.url, queries_per_second=1000.0, max_concurrency=8)
        began = time.perf_counter()
        decisions = WebSearchStage(search, db, index).decide(left, enhanced)
        wall = time.perf_counter() - began
        db.dispose()
        queries = server.count

    description = dict(zip(catalog["catalog_id"], catalog["description"], strict=True))
    matched = [d for d in decisions if d.matched]
    right = [d for d in matched if (d.item_id, d.catalog_id) in truth]
    wrong = [d for d in matched if (d.item_id, d.catalog_id) not in truth]
    precision = len(right) / len(matched) if matched else 1.0
    coverage = len(matched) / len(decisions) if decisions else 0.0
    true_read = sum(_true_page_read(web, d, true_of.get(d.item_id), search.results_per_query) for d in decisions)
    outcomes = Counter(d.evidence.get("outcome") for d in decisions)
    print(f"web stage: {len(decisions)} items, {queries} queries, {wall:.1f}s")
    print(f"matched {len(matched)}  right {len(right)}  wrong {len(wrong)}")
    print(f"precision {precision:.4f} (target >= {TARGET_PRECISION})  coverage {coverage:.3f} of the leftovers")
    print(f"outcomes: {dict(outcomes)}")
    print(f"true page among the results read: {true_read} of {len(decisions)}")
    rejected = Counter(str(d.evidence.get("rejected") or d.evidence.get("outcome"))[:40] for d in decisions if not d.matched)
    print(f"unmatched because: {dict(rejected.most_common())}")
    item_text = dict(zip(items["item_id"], items["description"], strict=True))
    for d in wrong[: args.show]:
        print(f"  WRONG {item_text[d.item_id]!r} -> {description[d.catalog_id]!r} (true {description.get(true_of.get(d.item_id, ''))!r})")
    if precision < TARGET_PRECISION:
        print(f"TARGET MISSED: precision {precision:.4f} < {TARGET_PRECISION}", file=sys.stderr)
        return 1
    return 0


def _true_page_read(web: NearMissWeb, decision: Decision, true_id: str | None, count: int) -> bool:
    """Whether the true product's page was among the results the stage read for this item."""
    if true_id is None:
        return False
    url = web.page(web.products[web.position[true_id]])["url"]
    return any(url in (r["url"] for r in web(q["query"])[:count]) for q in decision.evidence.get("queries", []))


if __name__ == "__main__":
    sys.exit(main())
