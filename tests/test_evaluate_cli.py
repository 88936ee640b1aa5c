"""``matching-pipeline evaluate`` on the bundled sample, whose right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from matching_pipeline.cli import main
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.settings import SAMPLE_DIR, Settings

TRUTH = SAMPLE_DIR / "truth.csv"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def matched(cli_env: Path) -> Path:
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--stages", "enhanced"]) == 0
    return cli_env


def test_evaluate_reports_what_an_independent_join_with_the_truth_says(matched: Path, capsys) -> None:
    out = matched / "evaluation"
    capsys.readouterr()
    assert main(["evaluate", "--project", "demo", "--labels", str(TRUTH), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "threshold sweep of the enhanced stage" in printed and "suggestion:" in printed

    report = json.loads((out / "evaluation.json").read_text())
    # The same figures computed here from the results database and the truth file, by a join.
    db = open_results_database(Settings.from_env().database_url)
    final = db.final_matches("demo")
    truth = pd.read_csv(TRUTH, dtype=str, keep_default_na=False)
    joined = final.merge(truth, on="item_id", suffixes=("", "_true"))
    accepted = joined[joined["catalog_id"].notna()]
    correct = int((accepted["catalog_id"] == accepted["catalog_id_true"]).sum())
    with_entry = int((truth["catalog_id"] != "").sum())
    auto = report["automatic"]
    assert report["items"] == 120
    assert report["labels"]["items_with_match"] == with_entry == 108
    assert report["labels"]["items_without_match"] == 12
    assert auto["accepts"] == len(accepted) and auto["unlabelled"] == 0  # the truth labels every item
    assert auto["correct"] == correct and auto["wrong"] == len(accepted) - correct
    assert auto["precision"] == round(correct / len(accepted), 4)
    assert auto["coverage"] == round(len(accepted) / 120, 4)
    assert auto["recall"] == round(correct / with_entry, 4)
    assert sum(f["accepts"] for f in auto["by_method"].values()) == auto["accepts"]

    # What the stage left: the right entry's rank among its saved candidates, checked directly.
    left = joined[joined["catalog_id"].isna() & (joined["catalog_id_true"] != "")]
    saved = db.stage_results("enhanced", sorted(set(final["chunk_key"])))
    ranks = []
    for row in left.itertuples():
        ids = [c.catalog_id for c in saved[row.chunk_key][row.item_id].candidates]
        ranks.append(ids.index(row.catalog_id_true) + 1 if row.catalog_id_true in ids else None)
    recall = report["stages"]["enhanced"]["candidate_recall_of_unmatched"]
    assert recall["items"] == len(ranks)
    assert recall["recall_at"]["10"] == round(sum(r is not None and r <= 10 for r in ranks) / len(ranks), 4)

    # The sweep at the settings in use reproduces what the stage accepted.
    current = report["suggestion"]["current"]
    assert current["accepts"] == report["stages"]["enhanced"]["accepts"]
    assert report["suggestion"]["message"]
    assert (out / "precision_coverage.png").read_bytes().startswith(PNG_SIGNATURE)


def test_evaluate_writes_beside_the_data_by_default_and_counts_human_decisions(matched: Path, capsys) -> None:
    db = open_results_database(Settings.from_env().database_url)
    truth = pd.read_csv(TRUTH, dtype=str, keep_default_na=False)
    partial = matched / "partial.csv"
    truth.head(50).to_csv(partial, index=False)
    # One person's decision on an item the file labels (and contradicts), one on an item it does not.
    inside, outside = truth.iloc[0], truth.iloc[60]
    other = truth.iloc[1]["catalog_id"]
    db.record_human_decisions("demo", {inside["item_id"]: other, outside["item_id"]: outside["catalog_id"] or None}, source="test")
    assert main(["evaluate", "--project", "demo", "--labels", str(partial)]) == 0
    report = json.loads((matched / "data" / "evaluation" / "demo" / "evaluation.json").read_text())
    labels = report["labels"]
    assert (labels["file_rows"], labels["human_decisions"], labels["human_overridden_by_file"]) == (50, 2, 1)
    assert labels["human_overridden_items"] == [inside["item_id"]]
    assert labels["items_labelled"] == 51
    assert "human" in report["stages"] and report["final"]["by_stage"]["human"]["accepts"] >= 1
    assert (matched / "data" / "evaluation" / "demo" / "precision_coverage.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "final, with human decisions" in capsys.readouterr().out


BAD_LABELS = [
    ("item_id,catalog_id\nITM-000001,CAT-000394\nITM-999999,CAT-000001\n",
     "labels.csv, row 2, column 'item_id': unknown item id 'ITM-999999' (not in project 'demo')"),
    ("item_id,catalog_id\nITM-000001,CAT-000394\nITM-000002,CAT-000082\nITM-000001,CAT-000394\n",
     "labels.csv, row 3: duplicate row: item 'ITM-000001' with catalog id 'CAT-000394' is already labelled in row 1"),
    ("item_id,label\nITM-000001,match\n", "labels.csv, column 'catalog_id': required column is missing"),
    ("item_id,catalog_id\nITM-000001,NO-SUCH-ENTRY\n",
     "labels.csv, row 1, column 'catalog_id': unknown catalog id 'NO-SUCH-ENTRY' (not in the catalog)"),
    ("item_id,catalog_id,label\nITM-000001,CAT-000394,probably\n", "labels.csv, row 1, column 'label'"),
]


def test_bad_labels_exit_2_naming_the_row(matched: Path, capsys) -> None:
    labels = matched / "labels.csv"
    for text, message in BAD_LABELS:  # one project matched once, every kind of bad file against it
        labels.write_text(text)
        capsys.readouterr()
        assert main(["evaluate", "--project", "demo", "--labels", str(labels), "--out", str(matched / "out")]) == 2
        assert message in capsys.readouterr().err
        assert not (matched / "out" / "evaluation.json").exists()


def test_unknown_project_and_bad_target_exit_2(matched: Path, capsys) -> None:
    assert main(["evaluate", "--project", "nobody", "--labels", str(TRUTH)]) == 2
    assert "project 'nobody' has no items" in capsys.readouterr().err
    assert main(["evaluate", "--project", "demo", "--labels", str(TRUTH), "--target-precision", "1.5"]) == 2
    assert "--target-precision must be in (0, 1]" in capsys.readouterr().err
