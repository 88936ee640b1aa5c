"""The enhanced stage: identifiers and fuzzy text, offline and high precision."""


from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from matching_pipeline.core.catalog import CatalogIndex
from matching_pipeline.core.enhanced import EnhancedSettings, match_enhanced
from matching_pipeline.core.models import Decision
from matching_pipeline.defs.stages import STAGE_SPECS, stage_asset


class EnhancedStage:
    def __init__(self, index: CatalogIndex, settings: EnhancedSettings | None = None):
        self.index = index
        self.settings = settings or EnhancedSettings()
        self.catalog_version: str | None = index.version

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        return match_enhanced(pending, self.index, self.settings)

    def chunk_metadata(self, decisions: Sequence[Decision]) -> dict[str, Any]:
        methods = Counter(d.method for d in decisions if d.matched)
        return {f"matched_by_{method}": n for method, n in sorted(methods.items())}


def _make_logic(context: dg.AssetExecutionContext) -> EnhancedStage:
    index, _ = context.resources.catalog_source.load_index()
    return EnhancedStage(index)


enhanced_matches = stage_asset(
    STAGE_SPECS["enhanced"],
    deps=["catalog"],
    description=(
        "Stage 1: exact GTIN, normalised part numbers, unique model numbers, then TF-IDF retrieval "
        "with rapidfuzz re-scoring; auto-accepts only with a margin and no conflicting identifiers, "
        "and saves the top candidates of every item for the AI stage."
    ),
    resource_keys={"catalog_source"},
    make_logic=_make_logic,
)
