"""Evaluation on labels: every expected figure below is worked out by hand from the small
project built here, so a wrong count or denominator fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from matching_pipeline.core.evaluation import (
    Label,
    LabelSet,
    candidate_recall,
    evaluate,
    human_labels,
    merge_labels,
    read_labels,
    suggest,
    threshold_sweep,
    wilson_lower_bound,
)
from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.core.readers import InputError

ITEMS = [f"i{n}" for n in range(1, 11)]
CURRENT = {"threshold_match_score": 0.5, "threshold_margin": 0.15}


def fuzzy_evidence(best: str | None, score: float, runner_up: float, conflict: str | None = None) -> dict:
    evidence = {"best_score": score, "runner_up_score": runner_up, "margin": round(score - runner_up, 6)}
    if best is not None:
        evidence["best_catalog_id"] = best
    if conflict:
        evidence["conflict"] = conflict
    return evidence


def cands(*ids: str) -> list[Candidate]:
    return [Candidate(c, 0.5 - 0.01 * n) for n, c in enumerate(ids)]


def enhanced() -> dict[str, Decision]:
    """What the enhanced stage decided at score 0.5 / margin 0.15 (consistent with its rules)."""
    d = [
        Decision("i1", "C1", "gtin", 1.0, fuzzy_evidence("C1", 0.7, 0.6)),
        Decision("i2", "C2", "part_number", 0.97, fuzzy_evidence("C2", 0.6, 0.5)),
        Decision("i3", "C3", "fuzzy", 0.9, fuzzy_evidence("C3", 0.9, 0.5)),
        Decision("i4", "C4", "fuzzy", 0.8, fuzzy_evidence("C4", 0.8, 0.6)),
        Decision("i5", "C5", "fuzzy", 0.7, fuzzy_evidence("C5", 0.7, 0.5)),
        Decision("i6", None, "none", 0.6, fuzzy_evidence("C6", 0.6, 0.55), cands("C7", "C6")),
        Decision("i7", None, "none", 0.95, fuzzy_evidence("C7", 0.95, 0.3, conflict="colour"), cands("C7")),
        Decision("i8", None, "none", 0.4, fuzzy_evidence("C8", 0.4, 0.1), cands("C8")),
        Decision("i9", None, "none", 0.0, fuzzy_evidence(None, 0.0, 0.0), []),
        Decision("i10", None, "none", 0.45, fuzzy_evidence("C10", 0.45, 0.1), cands("C10")),
    ]
    return {x.item_id: x for x in d}


def ai() -> dict[str, Decision]:
    d = [
        Decision("i6", "C6", "llm", 0.9),
        Decision("i7", None, "llm", 0.0),
        Decision("i8", "C11", "llm", 0.8),
        Decision("i9", None, "llm", 0.0),
        Decision("i10", None, "llm", 0.0),
    ]
    return {x.item_id: x for x in d}


def file_labels() -> list[Label]:
    return [
        Label("i1", "C1"),
        Label("i2", "C9"),
        Label("i3", "C3"),
        Label("i4", "C4", match=False),
        Label("i6", "C6"),
        Label("i7", None),
        Label("i8", "C8"),
        Label("i9", "C99"),
        Label("i10", None),
    ]


def decisions(with_human: bool = True) -> dict[str, dict[str, Decision]]:
    out = {"enhanced": enhanced(), "ai": ai()}
    if with_human:
        out["human"] = {"i2": Decision("i2", "C9", "human", 1.0)}
    return out


@pytest.fixture
def report() -> dict:
    labels = merge_labels(file_labels(), human_labels([("i2", "C9")]))
    return evaluate(ITEMS, decisions(), labels, current=CURRENT, target_precision=0.6, min_labelled=1,
                    score_grid=(0.3, 0.5, 0.85), margin_grid=(0.0, 0.15, 0.25))


def figures(f: dict) -> tuple:
    return f["accepts"], f["correct"], f["wrong"], f["unlabelled"], f["precision"], f["coverage"], f["recall"]


def test_precision_coverage_recall_of_the_automatic_answer_and_with_human_decisions(report: dict) -> None:
    # automatic: i1 ok, i2 wrong, i3 ok, i4 wrong (non-match), i5 unlabelled, ai i6 ok, ai i8 wrong;
    # 6 items have a labelled right entry (i1 i2 i3 i6 i8 i9).
    assert figures(report["automatic"]) == (7, 3, 3, 1, 0.5, 0.7, 0.5)
    # With the person's decision on i2 the final answer there is right.
    assert figures(report["final"]) == (7, 4, 2, 1, round(4 / 6, 4), 0.7, round(4 / 6, 4))
    assert figures(report["final"]["by_stage"]["human"]) == (1, 1, 0, 0, 1.0, 0.1, round(1 / 6, 4))
    by_method = report["automatic"]["by_method"]
    assert figures(by_method["enhanced/gtin"]) == (1, 1, 0, 0, 1.0, 0.1, round(1 / 6, 4))
    assert figures(by_method["enhanced/part_number"]) == (1, 0, 1, 0, 0.0, 0.1, 0.0)
    assert figures(by_method["enhanced/fuzzy"]) == (3, 1, 1, 1, 0.5, 0.3, round(1 / 6, 4))
    assert figures(by_method["ai/llm"]) == (2, 1, 1, 0, 0.5, 0.2, round(1 / 6, 4))
    assert report["labels"]["items_with_match_in_project"] == 6
    assert {w["item_id"] for w in report["wrong_accepts"]} == {"i2", "i4", "i8"}
    assert next(w for w in report["wrong_accepts"] if w["item_id"] == "i8")["expected"] == "C8"


def test_each_stage_is_judged_on_its_own_accepts(report: dict) -> None:
    stage = report["stages"]["enhanced"]
    # the person's correction of i2 does not excuse the enhanced stage's wrong accept
    assert figures(stage) == (5, 2, 2, 1, 0.5, 0.5, round(2 / 6, 4))
    assert stage["decided"] == 10 and stage["stage_match_rate"] == 0.5
    assert figures(report["stages"]["ai"]) == (2, 1, 1, 0, 0.5, 0.2, round(1 / 6, 4))
    assert report["stages"]["ai"]["decided"] == 5


def test_candidate_recall_of_what_each_stage_left(report: dict) -> None:
    # enhanced left i6 (right entry 2nd), i8 (1st), i9 (no candidates); i7, i10 have no entry.
    recall = report["stages"]["enhanced"]["candidate_recall_of_unmatched"]
    assert recall["items"] == 3
    assert recall["recall_at"] == {"1": round(1 / 3, 4), "3": round(2 / 3, 4), "5": round(2 / 3, 4), "10": round(2 / 3, 4)}
    assert recall["among_saved"] == round(2 / 3, 4)
    # ai left only i9 among items with a known entry, with no candidates
    assert report["stages"]["ai"]["candidate_recall_of_unmatched"]["items"] == 1
    assert report["stages"]["ai"]["candidate_recall_of_unmatched"]["recall_at"]["1"] == 0.0
    assert "candidate_recall_of_unmatched" not in report["stages"]["human"]


def sweep_point(report: dict, t: float, m: float) -> dict:
    return next(p for p in report["sweep"] if (p["threshold_match_score"], p["threshold_margin"]) == (t, m))


@pytest.mark.parametrize(
    ("t", "m", "accepts", "correct", "wrong"),
    [
        # fuzzy chances (score, margin, verdict): i3 .9/.4 ok, i4 .8/.2 wrong, i5 .7/.2 unlabelled,
        # i6 .6/.05 ok, i8 .4/.3 ok, i10 .45/.35 wrong (no entry); i7 has a conflict, i9 no candidate.
        # Identifier accepts i1 (ok) and i2 (wrong) count at every point.
        (0.3, 0.0, 8, 4, 3),
        (0.3, 0.15, 7, 3, 3),
        (0.3, 0.25, 5, 3, 2),
        (0.5, 0.0, 6, 3, 2),
        (0.5, 0.15, 5, 2, 2),
        (0.5, 0.25, 3, 2, 1),
        (0.85, 0.0, 3, 2, 1),
        (0.85, 0.25, 3, 2, 1),
    ],
)
def test_threshold_sweep_counts(report: dict, t: float, m: float, accepts: int, correct: int, wrong: int) -> None:
    point = sweep_point(report, t, m)
    assert (point["accepts"], point["correct"], point["wrong"]) == (accepts, correct, wrong)
    assert point["coverage"] == accepts / 10
    assert point["fuzzy"]["accepts"] == accepts - 2


def test_sweep_at_the_current_settings_reproduces_the_stage(report: dict) -> None:
    point = sweep_point(report, 0.5, 0.15)
    stage = report["stages"]["enhanced"]
    assert (point["accepts"], point["correct"], point["wrong"]) == (stage["accepts"], stage["correct"], stage["wrong"])
    assert report["suggestion"]["current"]["coverage"] == 0.5


def test_suggestion_takes_the_highest_coverage_that_reaches_the_target(report: dict) -> None:
    s = report["suggestion"]
    assert s["reached"] is True
    # precision >= 0.6: (0.3, 0.25) cov .5, (0.5, 0) cov .6, (0.5, .25) and (0.85, *) cov .3
    assert (s["threshold_match_score"], s["threshold_margin"]) == (0.5, 0.0)
    assert s["coverage"] == 0.6 and s["precision"] == 0.6
    assert s["confident"] is False and "caution" in s["message"]


def test_suggestion_among_ties_prefers_the_stricter_setting(report: dict) -> None:
    s = suggest(report["sweep"], target_precision=0.65, min_labelled=1)
    assert (s["threshold_match_score"], s["threshold_margin"], s["precision"]) == (0.85, 0.25, round(2 / 3, 4))


def test_no_setting_reaches_the_target(report: dict) -> None:
    s = suggest(report["sweep"], target_precision=0.99, min_labelled=1)
    assert s["reached"] is False
    assert "no setting reaches precision 0.99" in s["message"] and "0.667" in s["message"]


def test_identifier_accepts_alone_below_target_are_named() -> None:
    points = threshold_sweep({"i1": Decision("i1", "C1", "gtin", 1.0), "i2": Decision("i2", "C2", "gtin", 1.0)},
                             {"i1": _truth("C1"), "i2": _truth("C9")}, items=2, positives=2,
                             score_grid=(0.5,), margin_grid=(0.1,))
    s = suggest(points, target_precision=0.9, min_labelled=1)
    assert s["reached"] is False and "identifier accepts alone, which no threshold changes, have precision 0.500" in s["message"]


def _truth(catalog_id: str):
    return merge_labels([Label("x", catalog_id)]).truth["x"]


def test_too_few_labels_says_so(report: dict) -> None:
    s = suggest(report["sweep"], target_precision=0.6, min_labelled=30)
    assert s["reached"] is False
    assert "too few labels" in s["message"] and "at most 7" in s["message"]


def test_wilson_lower_bound() -> None:
    assert wilson_lower_bound(0, 0) is None
    assert wilson_lower_bound(10, 10) == pytest.approx(0.7225, abs=1e-4)
    assert wilson_lower_bound(990, 1000) > 0.98


def test_human_decisions_are_labels_and_the_file_wins_on_disagreement() -> None:
    labels = merge_labels(
        [Label("i1", "C1"), Label("i2", "C2", match=False), Label("i3", None)],
        human_labels([("i1", "C5"), ("i2", "C7"), ("i3", "C3"), ("i4", "C4"), ("i5", None)]),
    )
    assert isinstance(labels, LabelSet)
    assert labels.human_overridden == ["i1", "i3"]  # i1: file says C1; i3: file says no entry
    assert labels.truth["i1"].matches == {"C1"}
    assert labels.truth["i2"].matches == {"C7"} and labels.truth["i2"].wrong == {"C2"}  # consistent: both kept
    assert labels.truth["i4"].verdict("C4") is True and labels.truth["i4"].verdict("C1") is False
    assert labels.truth["i5"].verdict("C4") is False  # "none of these": any accept is wrong
    summary = labels.summary()
    assert (summary["file_rows"], summary["human_decisions"], summary["human_overridden_by_file"]) == (3, 5, 2)


def test_a_non_match_alone_leaves_other_entries_unknown() -> None:
    truth = merge_labels([Label("i1", "C1", match=False)]).truth["i1"]
    assert truth.verdict("C1") is False and truth.verdict("C2") is None


# -- the labels file ---------------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_pairs_labels_and_no_entry(tmp_path: Path) -> None:
    path = write(tmp_path, "item_id,catalog_id,label\ni1,C1,\ni2,C2,Non-Match\ni3,none,match\ni4,,\n i5 , C5 ,MATCH\n")
    labels = read_labels(path, item_ids=ITEMS, catalog_ids={"C1", "C2", "C5"}, project="p")
    assert [(x.item_id, x.catalog_id, x.match, x.row) for x in labels] == [
        ("i1", "C1", True, 1), ("i2", "C2", False, 2), ("i3", None, True, 3), ("i4", None, True, 4), ("i5", "C5", True, 5)
    ]
    # without a label column every row is a match; a spreadsheet's byte-order mark is no column name
    plain = read_labels(write(tmp_path, "\ufeffItem_ID,catalog_id\ni1,C1\n", "plain.csv"), item_ids=ITEMS)
    assert plain == [Label("i1", "C1", True, row=1)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item_id,label\ni1,match\n", "labels.csv, column 'catalog_id': required column is missing (found: item_id, label)"),
        ("item_id,catalog_id\ni1,C1\nzz,C2\n", "labels.csv, row 2, column 'item_id': unknown item id 'zz' (not in project 'p')"),
        ("item_id,catalog_id\ni1,C1\ni2,C2\ni1,C1\n", "labels.csv, row 3: duplicate row: item 'i1' with catalog id 'C1' is already labelled in row 1"),
        ("item_id,catalog_id,label\ni1,C1,match\ni1,C1,non-match\n", "row 2: duplicate row"),
        ("item_id,catalog_id,label\ni1,C1,maybe\n", "labels.csv, row 1, column 'label': label 'maybe' is not 'match' or 'non-match'"),
        ("item_id,catalog_id\ni1,none\ni1,C2\n", "labels.csv, row 2: item 'i1' has no entry in the catalog by row 1"),
        ("item_id,catalog_id\ni1,C2\ni1,\n", "labels.csv, row 2: item 'i1' has a match in row 1, so it cannot have no entry"),
        ("item_id,catalog_id,label\ni1,none,non-match\n", "row 1, column 'catalog_id': a non-match label needs a catalog id"),
        ("item_id,catalog_id\ni1,C404\n", "labels.csv, row 1, column 'catalog_id': unknown catalog id 'C404'"),
        ("item_id,catalog_id\n,C1\n", "row 1, column 'item_id': item_id is empty"),
        ("item_id,catalog_id\n", "file has a header but no rows"),
    ],
)
def test_bad_labels_are_refused_naming_the_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError) as err:
        read_labels(write(tmp_path, text), item_ids=ITEMS, catalog_ids={"C1", "C2"}, project="p")
    assert message in str(err.value)


def test_unknown_catalog_ids_are_not_checked_without_a_catalog(tmp_path: Path) -> None:
    assert read_labels(write(tmp_path, "item_id,catalog_id\ni1,C404\n"), item_ids=ITEMS)[0].catalog_id == "C404"


def test_every_bad_row_is_listed_at_once(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        read_labels(write(tmp_path, "item_id,catalog_id\nx1,C1\nx2,C1\n"), item_ids=ITEMS)
    assert "row 1" in str(err.value) and "row 2" in str(err.value)


def test_a_product_listed_twice_in_the_catalog_has_two_right_entries(tmp_path: Path) -> None:
    labels = read_labels(write(tmp_path, "item_id,catalog_id\ni1,C1\ni1,C2\n"), item_ids=ITEMS)
    truth = merge_labels(labels).truth["i1"]
    assert (truth.verdict("C1"), truth.verdict("C2"), truth.verdict("C3")) == (True, True, False)
    left = {"i1": Decision("i1", None, "none", 0.4, candidates=cands("C9", "C2"))}
    assert candidate_recall(left, {"i1": truth})["recall_at"] == {"1": 0.0, "3": 1.0, "5": 1.0, "10": 1.0}
