"""How large the review queue is on Abt-Buy after the enhanced stage, and whether a person could
settle what it holds from the candidates shown, for a few ``close_score`` settings.

Usage: python bench/review_queue_abt_buy.py /work/shared/datasets/abt_buy

Every Buy item has its product in Abt, so this measures only one side of the ``close_score``
trade-off (what a lower setting would still let a person find); the other side, items whose
product the catalog lacks and that would only fill the queue, needs a data set where the catalog
is incomplete. It reports, it does not tune.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_abt_buy import load  # noqa: E402

from matching_pipeline.core.catalog import CatalogIndex  # noqa: E402
from matching_pipeline.core.enhanced import match_enhanced  # noqa: E402
from matching_pipeline.core.models import Decision  # noqa: E402
from matching_pipeline.core.review import ReviewSettings, review_reason  # noqa: E402


def main(root: Path) -> int:
    items, catalog, truth = load(root)
    decisions = match_enhanced(items, CatalogIndex.build(catalog, version="abt"))

    def findable(d: Decision) -> bool:
        return any((d.item_id, c.catalog_id) in truth for c in d.candidates)

    matched = [d for d in decisions if d.matched]
    wrong = [d for d in matched if (d.item_id, d.catalog_id) not in truth]
    flagged_wrong = sum(review_reason("enhanced", d) is not None for d in wrong)
    print(f"items {len(decisions)}; accepts {len(matched)}, wrong {len(wrong)}, of which in the queue {flagged_wrong}")
    for close in (0.4, 0.5, 0.6, 0.7):
        settings = ReviewSettings(close_score=close)
        reasons = {d.item_id: review_reason("enhanced", d, settings) for d in decisions}
        queued = [d for d in decisions if reasons[d.item_id]]
        codes = Counter(str(reasons[d.item_id]).split(":")[0] for d in queued)
        queued_misses = [d for d in queued if not d.matched]
        left = [d for d in decisions if not d.matched and not reasons[d.item_id]]
        print(
            f"close_score {close}: queue {len(queued)} ({len(queued) / len(decisions):.1%}) {dict(codes)}; "
            f"unmatched in the queue with the product among its candidates {sum(map(findable, queued_misses))}/{len(queued_misses)}; "
            f"unmatched outside it {sum(map(findable, left))}/{len(left)}"
        )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
