"""The command line end to end on the bundled sample, and on the real PostgreSQL server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from matching_pipeline.cli import EXIT_BAD_INPUT, _HelpFormatter, build_parser, main
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.settings import SAMPLE_DIR


def test_match_runs_the_sample_through_dagster_and_writes_one_row_per_item(cli_env: Path, capsys) -> None:
    out = cli_env / "results.csv"
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12/12 chunks" in printed and "wrote 120 rows" in printed

    results = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(results) == 120
    assert list(results.columns[:5]) == ["item_id", "catalog_id", "stage", "method", "confidence"]
    assert "quantity" in results.columns  # extra input columns are carried to the results
    truth = pd.read_csv(SAMPLE_DIR / "truth.csv", dtype=str, keep_default_na=False)
    joined = results.merge(truth, on="item_id", suffixes=("", "_true"))
    matched = joined[joined["catalog_id"] != ""]
    assert len(matched) >= 60
    assert (matched["catalog_id"] == matched["catalog_id_true"]).mean() >= 0.97

    with dg.DagsterInstance.get() as instance:  # the runs are in DAGSTER_HOME, for the UI
        runs = instance.get_runs(dg.RunsFilter(tags={"matching/project": "demo"}))
        assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        assert len(instance.get_materialized_partitions(dg.AssetKey("enhanced_matches"))) == 12

    # The same file again finishes nothing twice.
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv")]) == 0
    assert "already done" in capsys.readouterr().out


def test_bad_input_exits_non_zero_naming_file_row_and_column(cli_env: Path, capsys) -> None:
    bad = cli_env / "bad.csv"
    bad.write_text("item_id,description\n1,Drill\n2,\n")
    assert main(["match", "--project", "demo", "--items", str(bad)]) == 2
    assert "bad.csv, row 2, column 'description': required value is empty" in capsys.readouterr().err

    mapped = cli_env / "mapped.csv"
    mapped.write_text("SKU,Name\nA1,Bosch drill\n")
    assert main(["match", "--project", "demo", "--items", str(mapped)]) == 2
    assert "column 'description'" in capsys.readouterr().err
    assert main(["match", "--project", "demo", "--items", str(mapped), "--columns", "item_id=SKU,description=Name", "--stages", "enhanced"]) == 0


def test_bad_catalog_is_reported(cli_env: Path, capsys) -> None:
    catalog = cli_env / "catalog.csv"
    catalog.write_text("catalog_id,description\nC1,Drill\nC1,Saw\n")
    assert main(["match", "--project", "demo", "--items", str(SAMPLE_DIR / "items.csv"), "--catalog", str(catalog)]) == 2
    assert "duplicate catalog_id 'C1' (rows 1, 2)" in capsys.readouterr().err


@pytest.mark.postgres
def test_pipeline_on_postgres_for_dagster_storage_and_results(tmp_path: Path, monkeypatch, postgres_database: str) -> None:
    """Dagster's storage (dagster-postgres) and the results database both on the real server."""
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.jobs.runner import ensure_partitions, run_stage
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.settings import Settings

    settings = Settings(data_dir=tmp_path, inbox_dir=tmp_path / "inbox", database_url=postgres_database, catalog_path=SAMPLE_DIR / "catalog.csv")
    defs = build_definitions(settings)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_url": postgres_database}}}) as instance:
        batch = ingest_file(open_results_database(postgres_database), SAMPLE_DIR / "items.csv", "pg")
        ensure_partitions(instance, batch.chunk_keys)
        outcomes = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="pg-1", stages=["enhanced"])
        assert [o.success for o in outcomes] == [True]
        assert instance.get_materialized_partitions(dg.AssetKey("enhanced_matches")) == set(batch.chunk_keys)
        records = instance.get_records_for_run(outcomes[0].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        assert len(records) == 12
    summary = open_results_database(postgres_database).project_summary("pg")
    assert summary["items"] == 120 and summary["matched"] >= 60


# -- what a person sees: help, progress, no Dagster log lines, exit codes -----------------------

DAGSTER_LOG_MARKERS = ("STEP_START", "RUN_SUCCESS", "ASSET_MATERIALIZATION", " - dagster - ")
"""Text only Dagster's console logger prints (its format is ``<time> - dagster - <LEVEL> - ...``)."""


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf command (``match``, ``review export``, ...) with its parser."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.extend(_commands(sub, (*path, name)))
    return found or [(path, parser)]


def test_every_command_documents_each_option_with_default_and_example_and_the_exit_codes(capsys) -> None:
    parser = build_parser()
    commands = _commands(parser)
    assert {" ".join(path) for path, _ in commands} >= {
        "match", "summary", "export", "evaluate", "review export", "review import", "sample", "status", "api",
        "cancel", "pause", "resume", "retry",
    }
    formatter = _HelpFormatter("matching-pipeline")
    for path, sub in commands:
        with pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        assert exited.value.code == 0
        shown = capsys.readouterr().out
        assert f"examples:\n  matching-pipeline {' '.join(path)}" in shown, path
        for code in ("0  done", "1  a run failed", "2  bad input", "3  the results database", "4  a pool"):
            assert code in shown, (path, code)
        for action in sub._actions:
            if action.help == argparse.SUPPRESS or "-h" in action.option_strings:
                continue
            text = formatter._get_help_string(action) or ""
            assert "default" in text or "(required)" in text, (path, action.dest, text)
            assert "e.g." in text, (path, action.dest, text)
            # the help as printed carries the same default (argparse fills %(default)s in)
            assert " ".join(text.replace("%(default)s", str(action.default)).split()) in " ".join(shown.split()), (path, action.dest)
    with pytest.raises(SystemExit):
        main(["match", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "(default: enhanced,ai,web_search)" in shown and "--force re-run chunks" in shown and "(default: off)" in shown
    with pytest.raises(SystemExit):
        main(["review", "export", "--help"])
    assert "(default: 10)" in capsys.readouterr().out


def test_match_shows_each_stage_reaching_its_total_and_no_dagster_log_lines_unless_verbose(
    cli_env: Path, capfd, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):  # CI may set these; the output below is for a pipe
        monkeypatch.delenv(name, raising=False)
    items = str(SAMPLE_DIR / "items.csv")
    assert main(["match", "--project", "quiet", "--items", items]) == 0
    out, err = capfd.readouterr()
    for marker in DAGSTER_LOG_MARKERS:
        assert marker not in out and marker not in err, marker
    lines = out.splitlines()
    for stage in ("enhanced", "ai", "web_search"):  # each stage starts, fills run by run and ends at its total
        assert f"[{stage}] 120 items in 12 chunks" in lines
        assert any(line.startswith(f"[{stage}] 12/12 chunks  120/120 items  run ") and line.endswith("ok") for line in lines)
        assert any(line.startswith(f"[{stage}] done: 120/120 items in ") and "items/s" in line for line in lines)
    assert "\x1b[" not in out  # not a terminal: plain lines, no bars redrawn with escape codes
    table = out[out.index("project quiet: 120 items"):]
    assert "│ enhanced  │ fuzzy" in table and "│ matched   │" in table and "60.0%" in table
    assert "review queue: 46 decisions to review" in table
    assert "results: in the results database; write them with: matching-pipeline export --project quiet" in table

    level_before = logging.getLogger("dagster").level  # whatever earlier code in this process set
    assert main(["match", "--project", "loud", "--items", items, "--stages", "enhanced", "--verbose"]) == 0
    out, err = capfd.readouterr()
    assert "STEP_START" in err and "RUN_SUCCESS" in err and " - dagster - DEBUG - " in err
    assert "[enhanced] done: 120/120 items" in out
    assert logging.getLogger("dagster").level == level_before  # main put Dagster's loggers back


def test_exit_codes_for_bad_input(cli_env: Path, capsys) -> None:
    items = str(SAMPLE_DIR / "items.csv")
    assert main(["match", "--project", "demo", "--items", items, "--stages", "enhanced,psychic"]) == EXIT_BAD_INPUT
    assert "unknown stage(s) psychic" in capsys.readouterr().err
    assert main(["match", "--project", "demo", "--items", str(cli_env / "missing.csv")]) == EXIT_BAD_INPUT
    assert "missing.csv: cannot be read" in capsys.readouterr().err
    assert main(["match", "--project", "demo", "--items", items, "--catalog", str(cli_env / "nope.csv")]) == EXIT_BAD_INPUT
    assert "catalog file not found" in capsys.readouterr().err
    assert main(["review", "export", "--project", "demo", "--out", str(cli_env / "r.csv"), "--candidates", "0"]) == EXIT_BAD_INPUT
    with pytest.raises(SystemExit) as exited:  # argparse's usage errors use the same code
        main(["match", "--items", items])
    assert exited.value.code == EXIT_BAD_INPUT
    assert "required: --project" in capsys.readouterr().err
