"""Records that flow between the stages of the cascade.

They are plain dataclasses so that the core can be tested in milliseconds and so that
the results database, the Dagster layer and the CLI agree on one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STAGES: tuple[str, ...] = ("enhanced", "ai", "web_search")
"""The cascade, in order. Each stage decides only what the ones before it left unmatched."""

HUMAN_STAGE = "human"
"""A person's decision from the review queue: stored as a stage of its own, ranked above every
stage of the cascade, and never written, replaced or deleted by a stage run."""

RESULT_STAGES: tuple[str, ...] = (*STAGES, HUMAN_STAGE)
"""Every stage a result row can have, in rank order: the latest one present is an item's answer."""

ITEM_FIELDS: tuple[str, ...] = ("item_id", "description", "part_number", "manufacturer", "gtin")
CATALOG_FIELDS: tuple[str, ...] = ("catalog_id", "description", "part_number", "manufacturer", "gtin")
REQUIRED_ITEM_FIELDS: tuple[str, ...] = ("item_id", "description")
REQUIRED_CATALOG_FIELDS: tuple[str, ...] = ("catalog_id", "description")


@dataclass(slots=True)
class Candidate:
    """A catalog entry considered for an item, with the score that ranked it.

    Not frozen: the enhanced stage makes hundreds of thousands of these per run, and a frozen
    dataclass's ``__init__`` is several times slower."""

    catalog_id: str
    score: float
    description: str = ""
    part_number: str | None = None
    manufacturer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        # Explicit rather than dataclasses.asdict: this runs for every candidate of every item.
        return {
            "catalog_id": self.catalog_id,
            "score": float(self.score),
            "description": self.description,
            "part_number": self.part_number,
            "manufacturer": self.manufacturer,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        fields: dict[str, Any] = {k: data.get(k) for k in ("catalog_id", "score", "description", "part_number", "manufacturer")}
        return cls(**fields)


@dataclass
class Decision:
    """One stage's verdict on one item.

    ``catalog_id`` is None when the stage found no match; ``candidates`` then carries what the
    next stage should look at. ``error`` records why a decision could not be made (for example a
    malformed model reply), so a failed item is visible rather than silently unmatched.
    """

    item_id: str
    catalog_id: str | None
    method: str
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)
    candidates: list[Candidate] = field(default_factory=list)
    error: str | None = None

    @property
    def matched(self) -> bool:
        return self.catalog_id is not None
