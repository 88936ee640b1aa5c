"""CSV exports carry no formulas into the spreadsheets people open them in (OWASP CSV injection)."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from matching_pipeline.core.models import Decision
from matching_pipeline.results.exports import neutralise_cell, neutralise_frame, write_csv
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.results.store import ResultsDatabase

HOSTILE = {
    "f1": "=cmd|' /C calc'!A0",
    "f2": "+SUM(1,2)",
    "f3": "-2+3",
    "f4": "@SUM(A1:A2)",
    "f5": "\t=1+1",
    "f6": "\r=1+1",
}


@pytest.mark.parametrize("text", list(HOSTILE.values()))
def test_formula_starts_get_a_leading_quote(text: str) -> None:
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["Drill =18V", "plain", "", " =1+1", "'already quoted", None, -5, -0.25, 3, True])
def test_everything_else_is_left_alone(value) -> None:
    assert neutralise_cell(value) == value


def test_numeric_columns_stay_numbers_and_text_columns_are_neutralised(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["-5", "a"], "confidence": [-0.5, 1.0], "count": [-3, 4], "=header": ["x", "y"]})
    safe = neutralise_frame(frame)
    assert safe["id"].tolist() == ["'-5", "a"]  # text that starts with '-' is quoted, as OWASP says
    assert safe["confidence"].tolist() == [-0.5, 1.0] and safe["count"].tolist() == [-3, 4]
    assert list(safe.columns) == ["id", "confidence", "count", "'=header"]
    assert frame["id"].tolist() == ["-5", "a"]  # the caller's frame is not changed

    path = tmp_path / "out" / "safe.csv"
    write_csv(frame, path)
    rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
    assert rows[1] == ["'-5", "-0.5", "-3", "x"]
    assert not list(path.parent.glob(".*"))  # the temporary file was renamed, not left behind


def test_cli_export_neutralises_hostile_descriptions_and_extra_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from matching_pipeline import cli

    url = f"sqlite:///{tmp_path / 'results.db'}"
    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MATCHING_DATABASE_URL", url)
    # Descriptions are stripped on input, so the tab and CR cases ride in an extra column, which
    # is carried as it came. JSON Lines, so that the CR survives the round trip.
    items = pd.DataFrame(
        {
            "item_id": list(HOSTILE),
            "description": [text.strip() + " drill" if text[0] in "\t\r" else text for text in HOSTILE.values()],
            "note": list(HOSTILE.values()),
        }
    )
    source = tmp_path / "items.jsonl"
    items.to_json(source, orient="records", lines=True)
    db = ResultsDatabase(url)
    batch = ingest_file(db, source, "acme")
    db.replace_results(
        "enhanced", {batch.chunk_keys[0]: [Decision(i, None, "none", 0.0) for i in HOSTILE]}, "v1"
    )
    out = tmp_path / "export.csv"
    assert cli.main(["export", "--project", "acme", "--out", str(out)]) == 0
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert exported["description"].tolist() == ["'" + text for text in items["description"]]
    assert exported["note"].tolist() == ["'" + text for text in HOSTILE.values()]
    assert exported["confidence"].tolist() == ["0.0"] * len(HOSTILE)
    db.engine.dispose()
