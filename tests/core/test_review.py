"""The review rule: which single decisions a person should look at, and which can stand."""

from __future__ import annotations

import pytest

from matching_pipeline.core.models import HUMAN_STAGE, RESULT_STAGES, STAGES, Candidate, Decision
from matching_pipeline.core.review import REASON_CODES, ReviewSettings, review_reason


def matched(method: str, confidence: float, **evidence) -> Decision:
    return Decision("i1", "c1", method, confidence, evidence, [Candidate("c1", confidence, "Widget")])


def unmatched(best: float | None, method: str = "none", **evidence) -> Decision:
    candidates = [] if best is None else [Candidate("c2", best - 0.1, "Other"), Candidate("c1", best, "Widget")]
    return Decision("i1", None, method, 0.0, evidence, candidates)


def code(reason: str | None) -> str | None:
    return None if reason is None else reason.split(":", 1)[0]


def test_human_is_a_result_stage_above_the_cascade_but_not_a_cascade_stage() -> None:
    assert HUMAN_STAGE not in STAGES and RESULT_STAGES[-1] == HUMAN_STAGE and RESULT_STAGES[:-1] == STAGES


def test_fuzzy_accept_is_reviewed_only_when_the_stage_asked_for_a_second_opinion() -> None:
    assert review_reason("enhanced", matched("fuzzy", 0.62)) is None
    reason = review_reason("enhanced", matched("fuzzy", 0.62, verify=True, score=0.62))
    assert code(reason) == "verify" and "c1" in reason and "0.62" in reason
    # Identifier accepts state no doubt: their confidence is a rule constant, not a probability.
    assert review_reason("enhanced", matched("model_number", 0.5)) is None


def test_blocked_accept_is_reviewed_with_its_conflict() -> None:
    blocked = unmatched(0.3, blocked=True, conflict="colour: black vs silver", best_catalog_id="c1")
    reason = review_reason("enhanced", blocked)
    assert code(reason) == "conflict" and "colour: black vs silver" in reason and "c1" in reason
    # The keys the enhanced stage wrote before ``blocked`` existed mean the same thing.
    assert code(review_reason("enhanced", unmatched(0.3, rejected="conflict", conflict="edition"))) == "conflict"
    assert code(review_reason("enhanced", unmatched(0.3, identifier_conflict="capacity 4 GB vs 8 GB"))) == "conflict"
    # A contradiction with a candidate that would not have been accepted anyway is no blocked accept.
    assert review_reason("enhanced", unmatched(0.3, conflict="colour", rejected="below threshold_margin")) is None


def test_model_matches_below_the_review_confidence_are_reviewed() -> None:
    reason = review_reason("ai", matched("llm", 0.6))
    assert code(reason) == "low_confidence" and "0.60" in reason and "0.80" in reason
    assert review_reason("ai", matched("llm", 0.8)) is None
    assert review_reason("ai", matched("llm", 0.6), ReviewSettings(confidence=0.5)) is None
    assert code(review_reason("web_search", matched("web", 0.7))) == "low_confidence"
    assert review_reason("web_search", matched("web", 0.8)) is None


def test_unmatched_items_with_a_close_candidate_are_reviewed() -> None:
    reason = review_reason("enhanced", unmatched(0.55, rejected="below threshold_margin"))
    assert code(reason) == "close_candidate" and "c1" in reason and "0.55" in reason  # the best, not the first listed
    assert review_reason("enhanced", unmatched(0.45)) is None
    assert review_reason("enhanced", unmatched(None, rejected="no candidates")) is None
    assert code(review_reason("enhanced", unmatched(0.45), ReviewSettings(close_score=0.4))) == "close_candidate"
    # Whatever stage left it: a model's "none of these" over a close candidate is still a doubt.
    assert code(review_reason("ai", unmatched(0.7, method="llm"))) == "close_candidate"


def test_ambiguous_web_evidence_and_explicit_flags_are_reviewed() -> None:
    ambiguous = unmatched(None, outcome="ambiguous", supported={"c1": [], "c2": []})
    assert review_reason("web_search", ambiguous) == "ambiguous: search results support 2 catalog entries"
    flagged = matched("web", 0.9, review="result page names another maker's code")
    assert review_reason("web_search", flagged) == "flagged: result page names another maker's code"


def test_errors_and_human_decisions_are_never_reviewed() -> None:
    failed = Decision("i1", None, "llm", 0.0, {}, [Candidate("c1", 0.9)], error="malformed reply")
    assert review_reason("ai", failed) is None
    assert review_reason(HUMAN_STAGE, matched("human", 1.0, verify=True)) is None


def test_every_reason_starts_with_a_known_code() -> None:
    reasons = [
        review_reason("enhanced", matched("fuzzy", 0.6, verify=True)),
        review_reason("enhanced", unmatched(0.3, blocked=True, conflict="colour")),
        review_reason("ai", matched("llm", 0.1)),
        review_reason("ai", unmatched(0.9)),
        review_reason("web_search", unmatched(None, outcome="ambiguous")),
        review_reason("web_search", unmatched(None, outcome="unconfirmed")),
        review_reason("web_search", matched("web", 0.9, review="x")),
    ]
    assert sorted(code(r) for r in reasons) == sorted(REASON_CODES)


@pytest.mark.parametrize("field", ["confidence", "close_score"])
def test_settings_outside_zero_to_one_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ReviewSettings(**{field: 1.5})


def test_web_evidence_left_unconfirmed_without_a_model_is_reviewed() -> None:
    decision = Decision("i1", None, "none", 0.0, evidence={"outcome": "unconfirmed"})
    reason = review_reason("web_search", decision)
    assert reason is not None and reason.startswith("unconfirmed:")
