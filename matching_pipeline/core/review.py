"""Which decisions a person should look at: the pure rule behind the review queue.

A matching product is judged by the precision of what it asserts, and no threshold is right on
every catalog. So instead of pretending certainty, each stage's doubtful decisions are put in
front of a person: accepts that were close calls, accepts refused only because of a
contradiction, model answers the model itself was unsure of, and items left unmatched although a
candidate came close. The rule looks only at one decision and its evidence, so it is applied the
moment a stage writes its results (in the same transaction) and costs nothing to re-apply.
"""

from __future__ import annotations

from dataclasses import dataclass

from matching_pipeline.core.models import HUMAN_STAGE, Decision

REVIEW_FLAG = "review"
"""Evidence key any stage may set to a short text to put its decision in the queue for a reason
this module does not know (for example web evidence that stayed ambiguous without a model)."""

VERIFY = "verify"
CONFLICT = "conflict"
LOW_CONFIDENCE = "low_confidence"
AMBIGUOUS = "ambiguous"
UNCONFIRMED = "unconfirmed"
CLOSE_CANDIDATE = "close_candidate"
FLAGGED = "flagged"
REASON_CODES: tuple[str, ...] = (VERIFY, CONFLICT, LOW_CONFIDENCE, AMBIGUOUS, UNCONFIRMED, CLOSE_CANDIDATE, FLAGGED)
"""Every reason starts with one of these codes, then ``": "`` and a sentence for the reviewer."""


@dataclass(frozen=True)
class ReviewSettings:
    """How doubtful a decision must be to enter the review queue."""

    confidence: float = 0.8
    """A model (AI stage) or web match with a lower confidence is reviewed. Models state 0.8 or
    more when they see the deciding identifier or attribute in both texts; below it they are
    guessing between near twins, which is the error this product must not make silently. The
    web stage's own accepts start at 0.8, so only its model-confirmed choices can fall below."""
    close_score: float = 0.5
    """An item left unmatched whose best candidate scores at least this is reviewed. 0.5 is the
    enhanced stage's default ``threshold_match_score``: a candidate that similar was held back
    only by the margin over a near twin or by a contradiction, exactly the cases a person settles
    at a glance from the candidates listed. Below it the catalog most likely lacks the product,
    and listing every such item would bury the decisions a person can actually make."""

    def __post_init__(self) -> None:
        for name in ("confidence", "close_score"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"review {name} must be between 0 and 1, got {value}")


def review_reason(stage: str, decision: Decision, settings: ReviewSettings = ReviewSettings()) -> str | None:
    """Why ``decision`` (made by ``stage``) should be reviewed, or None when it can stand.

    The reason starts with one of :data:`REASON_CODES`. A decision that failed with an error is
    not reviewed: it is retried (``matching-pipeline retry``), and a person's time is for
    answers, not for outages. Human decisions are final and never reviewed again.
    """
    if stage == HUMAN_STAGE or decision.error is not None:
        return None
    evidence = decision.evidence or {}
    flagged = evidence.get(REVIEW_FLAG)
    if isinstance(flagged, str) and flagged.strip():
        return f"{FLAGGED}: {flagged.strip()}"
    if decision.matched:
        return _doubtful_match(stage, decision, settings)
    return _doubtful_miss(stage, decision, settings)


def _doubtful_match(stage: str, decision: Decision, settings: ReviewSettings) -> str | None:
    evidence = decision.evidence
    if stage == "enhanced":
        # The enhanced stage's confidences are rule constants and scores; it states its own doubt.
        if evidence.get("verify"):
            score = _num(evidence.get("score", decision.confidence))
            return f"{VERIFY}: fuzzy accept of {decision.catalog_id} scored {score}, below the verify score"
        return None
    if decision.confidence < settings.confidence:
        who = "model" if decision.method == "llm" else f"{stage} match"
        return (
            f"{LOW_CONFIDENCE}: {who} chose {decision.catalog_id} with confidence {_num(decision.confidence)}"
            f" (< {_num(settings.confidence)})"
        )
    return None


def _doubtful_miss(stage: str, decision: Decision, settings: ReviewSettings) -> str | None:
    evidence = decision.evidence
    if stage == "enhanced" and _blocked(evidence):
        conflict = evidence.get("conflict") or evidence.get("identifier_conflict") or "contradiction"
        best = evidence.get("best_catalog_id") or (decision.candidates[0].catalog_id if decision.candidates else None)
        return f"{CONFLICT}: accept of {best} blocked by {conflict}"
    if evidence.get("outcome") == AMBIGUOUS:
        supported = evidence.get("supported")
        count = len(supported) if isinstance(supported, (dict, list)) else "several"
        return f"{AMBIGUOUS}: search results support {count} catalog entries"
    if evidence.get("outcome") == UNCONFIRMED:
        return f"{UNCONFIRMED}: only the words of search results point to a catalog entry"
    best = max(decision.candidates, key=lambda c: c.score or 0.0, default=None)
    if best is not None and (best.score or 0.0) >= settings.close_score:
        return f"{CLOSE_CANDIDATE}: left unmatched although {best.catalog_id} scores {_num(best.score)}"
    return None


def _blocked(evidence: dict) -> bool:
    """An auto-accept refused only because of a contradiction (``blocked``, or the older keys
    ``rejected == "conflict"`` and ``identifier_conflict`` written before ``blocked`` existed)."""
    return bool(evidence.get("blocked") or evidence.get("rejected") == CONFLICT or evidence.get("identifier_conflict"))


def _num(value: object) -> str:
    return f"{float(value):.2f}" if isinstance(value, (int, float)) else str(value)
