"""The CLI's progress display on its own: bars on a terminal, plain lines elsewhere, fed by runs
and by polling the results database, whichever comes first."""

from __future__ import annotations

import io
import threading
import time

from rich.console import Console

from matching_pipeline.cli_display import MatchDisplay, animated, clock, print_summary
from matching_pipeline.jobs.runner import RunOutcome

KEYS = [f"b000001:demo:{i:05d}" for i in range(1, 13)]
SIZES = {**{key: 10 for key in KEYS}, KEYS[-1]: 5}  # the last chunk of a batch may be short


def _outcome(stage: str, first: str, last: str, chunks: int, success: bool = True, error: str | None = None) -> RunOutcome:
    return RunOutcome(stage=stage, run_id="0123456789abcdef", first=first, last=last, chunks=chunks, success=success, seconds=0.5, error=error)


def test_on_a_terminal_each_stage_gets_a_bar_with_items_rate_and_time_left() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120, record=True, color_system=None)
    with MatchDisplay(console, animate=True) as display:
        for stage in ("enhanced", "ai"):
            with display.stage(stage, KEYS, SIZES) as tracker:
                tracker.mark(KEYS[:6])
                time.sleep(0.2)
                tracker.run_finished(_outcome(stage, KEYS[0], KEYS[-1], 12))
        with display.stage("web_search", KEYS, SIZES) as tracker:
            tracker.mark(KEYS[:3])
    shown = console.export_text()
    assert "[enhanced] 12/12 chunks  115/115 items  run 01234567  0.5s  ok" in shown
    final = shown.split("[ai] 12/12 chunks")[-1]  # the frames drawn after the last run line
    rows = {line.split()[0]: line for line in final.splitlines() if line.split() and line.split()[0] in ("enhanced", "ai", "web_search")}
    assert "115/115 items" in rows["enhanced"] and "items/s" in rows["enhanced"] and " in 0:00:0" in rows["enhanced"]
    assert "115/115 items" in rows["ai"]
    assert "30/115 items" in rows["web_search"] and "ETA" in rows["web_search"]


def test_elsewhere_plain_lines_count_chunks_and_items_and_a_failed_run_counts_nothing() -> None:
    log = io.StringIO()
    display = MatchDisplay(Console(file=log))
    assert not display.animate  # not a terminal
    with display, display.stage("ai", KEYS, SIZES) as tracker:
        tracker.run_finished(_outcome("ai", KEYS[0], KEYS[5], 6))
        tracker.run_finished(_outcome("ai", KEYS[6], KEYS[-1], 6, success=False, error="model fell over"))
    lines = log.getvalue().splitlines()
    assert lines[0] == "[ai] 115 items in 12 chunks"
    assert lines[1] == "[ai] 6/12 chunks  60/115 items  run 01234567  0.5s  ok"
    assert lines[2] == f"[ai] 6/12 chunks  60/115 items  run 01234567  0.5s  FAILED (6 chunks {KEYS[6]} .. {KEYS[-1]}): model fell over"
    assert lines[3].startswith("[ai] stopped: 60/115 items in 0:00:0")


def test_the_poller_fills_the_bar_inside_a_run_and_ignores_chunks_finished_before() -> None:
    """A run covers up to hundreds of chunks: progress comes from the chunks the database says are
    finished while it goes on. With --force they were finished before, and must not count."""
    finished = {KEYS[0], KEYS[1]}  # finished by an earlier run (re-done under --force)
    lock = threading.Lock()

    def poll() -> set[str]:
        with lock:
            return set(finished)

    log = io.StringIO()
    display = MatchDisplay(Console(file=log), poll_s=0.02, heartbeat_s=0.1)
    with display, display.stage("enhanced", KEYS, SIZES, poll=poll) as tracker:
        with lock:
            finished.update(KEYS[2:8])
        deadline = time.monotonic() + 5
        while tracker.items_done < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracker.items_done == 60 and tracker.done == set(KEYS[2:8])
        time.sleep(0.3)  # long enough for a heartbeat line in the plain log
    out = log.getvalue()
    assert "[enhanced] 60/115 items" in out and "items/s  ETA " in out
    assert "[enhanced] stopped: 60/115 items" in out


def test_a_poll_that_fails_does_not_stop_the_work() -> None:
    def poll() -> set[str]:
        raise ConnectionError("database gone")

    display = MatchDisplay(Console(file=io.StringIO()), poll_s=0.01)
    with display, display.stage("ai", KEYS, SIZES, poll=poll) as tracker:
        time.sleep(0.05)
        tracker.run_finished(_outcome("ai", KEYS[0], KEYS[-1], 12))
    assert tracker.items_done == 115


def test_bars_only_on_an_interactive_terminal(monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # CI logs: rich calls them terminals, they get plain lines
    assert not animated(Console(file=io.StringIO()))
    assert clock(3725.4) == "1:02:05"


def test_the_summary_table_shows_stages_methods_review_queue_and_where_results_are(capsys) -> None:
    summary = {
        "project": "demo", "items": 120, "matched": 80, "unmatched": 40, "errors": 2, "open_reviews": 7,
        "by_stage": {
            "enhanced": {"matched": 70, "methods": {"gtin": 20, "part_number": 50}},
            "ai": {"matched": 10, "methods": {"llm": 10}},
        },
    }
    print_summary(summary, notes={"web_search": "skipped"}, where=["results: wrote 120 rows to out.csv"], console=Console(width=80))
    out = capsys.readouterr().out
    assert "project demo: 120 items" in out
    assert "│ enhanced    │ gtin        │    20 │ 16.7% │" in out
    assert "│             │ part_number │    50 │ 41.7% │" in out
    assert "│ ai          │ llm         │    10 │  8.3% │" in out
    assert "│ matched     │             │    80 │ 66.7% │" in out
    assert "│ with errors │             │     2 │  1.7% │" in out
    assert "web_search: skipped" in out
    assert "review queue: 7 decisions to review (matching-pipeline review export --project demo --out review.csv)" in out
    assert out.rstrip().endswith("results: wrote 120 rows to out.csv")


def test_lines_reach_stdout_while_a_step_captures_descriptor_1(capfd, tmp_path) -> None:
    """Dagster points descriptor 1 at the step's compute-log file while a step runs in process
    (``dup2``): the progress must still reach the user, and stay out of the step's log."""
    import os
    import sys

    compute_log = tmp_path / "step.out"
    with MatchDisplay() as display:
        sys.stdout.flush()
        saved = os.dup(1)
        with open(compute_log, "w") as captured:
            os.dup2(captured.fileno(), 1)
            try:
                display.say("[ai] 40/115 items  12.0 items/s  ETA 0:00:06")
            finally:
                os.dup2(saved, 1)
                os.close(saved)
    assert "[ai] 40/115 items" in capfd.readouterr().out
    assert compute_log.read_text() == ""
