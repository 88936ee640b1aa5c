"""What the command line shows while ``match`` works, and the table it ends with.

Part of the entry-point layer (only ``cli.py`` uses it): nothing here decides anything, it only
shows what the runner and the results database report.

On a terminal each stage gets a ``rich`` progress bar (items done of total, items per second,
time left) that fills chunk by chunk, because a run covers up to hundreds of chunks and a bar that
moved once per run would sit still for minutes. Anywhere else (CI, a pipe, a log file, tests) the
same facts come as plain lines that do not depend on timing: one when a stage starts, one per run,
one when it ends, plus, only for stages that run long, a line every ``heartbeat_s`` seconds so a log
shows the job is alive and when it should end.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from matching_pipeline.jobs.runner import RunOutcome


def animated(console: Console) -> bool:
    """Bars only on an interactive terminal: ``FORCE_COLOR`` in CI makes rich treat a log as a
    terminal, and redrawn bars in a log file are noise."""
    isatty = getattr(console.file, "isatty", None)
    return bool(console.is_terminal and not console.is_dumb_terminal and isatty is not None and isatty())


def _own_stdout() -> TextIO | None:
    """A stream on a duplicate of file descriptor 1, or None where stdout has no descriptor (tests).

    While a step runs in process, Dagster points descriptor 1 at the step's compute-log file
    (``dup2``), so a bar redrawn meanwhile through ``sys.stdout`` would not reach the terminal and
    would fill the log the UI shows for the step. A duplicate taken before any run keeps pointing
    at the terminal (or pipe)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(sys.stdout, "encoding", None) or "utf-8", errors="replace")


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _ItemsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- items/s" if speed is None else f"{speed:,.1f} items/s", style="progress.data.speed")


class _TimeLeft(ProgressColumn):
    """ETA while the stage runs, then how long it took (rich's column shows both as a bare clock)."""

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text(f"in {clock(task.finished_time or 0.0)}", style="progress.elapsed")
        left = task.time_remaining
        return Text(f"ETA {'-:--:--' if left is None else clock(left)}", style="progress.remaining")


class MatchDisplay:
    """Progress of ``match`` over its stages: use as a context manager around all of them."""

    def __init__(
        self, console: Console | None = None, *, animate: bool | None = None, heartbeat_s: float = 30.0, poll_s: float = 0.5
    ) -> None:
        self._stream = None if console is not None else _own_stdout()
        self.console = console or Console(file=self._stream)
        self.animate = animated(self.console) if animate is None else animate
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self._progress: Progress | None = None

    def __enter__(self) -> MatchDisplay:
        if self.animate:
            self._progress = Progress(
                TextColumn("{task.description:<11}", style="bold"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("items"),
                _ItemsPerSecond(),
                _TimeLeft(),
                console=self.console,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._stream is not None:
            self._stream.close()  # the duplicate only; descriptor 1 stays open
            self._stream = None

    def say(self, text: str) -> None:
        """One line above the bars (or in the plain log), never cut or re-wrapped: error messages
        and run ids are read and copied from it."""
        sys.stdout.flush()  # what the CLI printed before comes before, though written through another descriptor
        if self._progress is not None:
            self._progress.console.print(Text(text), soft_wrap=True)
        else:
            print(text, file=self.console.file, flush=True)

    @contextmanager
    def stage(
        self, stage: str, keys: Sequence[str], sizes: Mapping[str, int], poll: Callable[[], set[str]] | None = None
    ) -> Iterator[StageTracker]:
        """Track ``stage`` over ``keys`` (``sizes``: items per chunk). ``poll`` returns the chunks
        the stage has finished so far, read from the results database while a run goes on; it is
        asked once before the stage starts, so chunks finished before (``--force``) do not count."""
        tracker = StageTracker(self, stage, keys, sizes)
        task = None if self._progress is None else self._progress.add_task(stage, total=tracker.total_items)
        tracker._task = task
        if task is None:
            self.say(f"[{stage}] {tracker.total_items} items in {len(keys)} chunks")
        stop = threading.Event()
        watcher = None
        if poll is not None:
            baseline = _quietly(poll) or set()
            watcher = threading.Thread(target=tracker._watch, args=(poll, baseline, stop), name=f"progress-{stage}", daemon=True)
            watcher.start()
        try:
            yield tracker
        finally:
            stop.set()
            if watcher is not None:
                watcher.join(timeout=5)  # a read stuck retrying a lost database must not hold the CLI
            tracker._closed = True
            if task is None:
                self.say(tracker.ending())

    def _update(self, task: TaskID | None, items: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, completed=items)


class StageTracker:
    """Chunks of one stage done so far; fed by run outcomes and by the poller, whichever is first."""

    def __init__(self, display: MatchDisplay, stage: str, keys: Sequence[str], sizes: Mapping[str, int]) -> None:
        self.display = display
        self.stage = stage
        self.keys = list(keys)
        self.sizes = {key: sizes[key] for key in self.keys}
        self.total_items = sum(self.sizes.values())
        self.done: set[str] = set()
        self.items_done = 0
        self.began = time.monotonic()
        self._said = self.began
        self._lock = threading.Lock()
        self._task: TaskID | None = None
        self._closed = False

    def mark(self, keys: Sequence[str] | set[str]) -> None:
        """Count ``keys`` as finished (idempotent; keys of other stages or batches are ignored)."""
        with self._lock:
            if self._closed:
                return
            new = [key for key in keys if key in self.sizes and key not in self.done]
            if not new:
                return
            self.done.update(new)
            self.items_done += sum(self.sizes[key] for key in new)
            self.display._update(self._task, self.items_done)

    def run_finished(self, outcome: RunOutcome) -> None:
        """A run ended: its range is done if it succeeded. A failed run's range is not counted
        (some of its chunks may be done: the poller counts those, the re-run finds out)."""
        if outcome.success:
            position = {key: i for i, key in enumerate(self.keys)}
            if outcome.first in position and outcome.last in position:
                self.mark(self.keys[position[outcome.first] : position[outcome.last] + 1])
            state = "ok"
        else:
            state = f"FAILED ({outcome.chunks} chunks {outcome.first} .. {outcome.last}): {outcome.error}"
        self.display.say(
            f"[{self.stage}] {len(self.done)}/{len(self.keys)} chunks  {self.items_done}/{self.total_items} items  "
            f"run {outcome.run_id[:8]}  {outcome.seconds:.1f}s  {state}"
        )

    def say(self, text: str) -> None:
        self.display.say(f"[{self.stage}] {text}")

    def rate(self) -> float:
        elapsed = time.monotonic() - self.began
        return self.items_done / elapsed if elapsed > 0 else 0.0

    def ending(self) -> str:
        word = "done" if self.items_done >= self.total_items else "stopped"
        return (
            f"[{self.stage}] {word}: {self.items_done}/{self.total_items} items in {clock(time.monotonic() - self.began)}"
            f" ({self.rate():,.1f} items/s)"
        )

    def _watch(self, poll: Callable[[], set[str]], baseline: set[str], stop: threading.Event) -> None:
        while not stop.wait(self.display.poll_s):
            finished = _quietly(poll)
            if finished is not None:
                self.mark(finished - baseline)
            if self.display.animate or time.monotonic() - self._said < self.display.heartbeat_s:
                continue
            self._said = time.monotonic()
            rate = self.rate()
            left = (self.total_items - self.items_done) / rate if rate > 0 else None
            self.say(
                f"{self.items_done}/{self.total_items} items  {rate:,.1f} items/s  "
                f"ETA {'unknown' if left is None else clock(left)}"
            )


def _quietly(poll: Callable[[], set[str]]) -> set[str] | None:
    """Progress is for show: a failed read (database busy or gone) must not stop the work."""
    try:
        return set(poll())
    except Exception:
        return None


def summary_table(summary: Mapping[str, Any]) -> Table:
    """Matched items by stage and method, with totals, from ``ResultsDatabase.project_summary``."""
    total = summary["items"]

    def share(n: int) -> str:
        return f"{n / total:.1%}" if total else "-"

    table = Table(title=f"project {summary['project']}: {total} items", title_justify="left")
    table.add_column("stage")
    table.add_column("method")
    table.add_column("items", justify="right")
    table.add_column("share", justify="right")
    for stage, entry in summary["by_stage"].items():
        methods = sorted(entry["methods"].items())
        for i, (method, n) in enumerate(methods):
            table.add_row(stage if i == 0 else "", method, str(n), share(n), end_section=i == len(methods) - 1)
    table.add_row("matched", "", str(summary["matched"]), share(summary["matched"]), style="bold")
    table.add_row("unmatched", "", str(summary["unmatched"]), share(summary["unmatched"]))
    if summary["errors"]:
        table.add_row("with errors", "", str(summary["errors"]), share(summary["errors"]), style="red")
    return table


def print_summary(
    summary: Mapping[str, Any], *, notes: Mapping[str, str] | None = None, where: Sequence[str] = (), console: Console | None = None
) -> None:
    """The table, then what the user may act on: stage notes, the review queue, where results are."""
    console = console or Console()
    console.print(summary_table(summary))
    lines = [f"{stage}: {note}" for stage, note in (notes or {}).items()]
    reviews = summary.get("open_reviews") or 0
    lines.append(
        f"review queue: {reviews} decisions to review"
        + (f" (matching-pipeline review export --project {summary['project']} --out review.csv)" if reviews else "")
    )
    lines.extend(where)
    for line in lines:  # plain prints: paths and commands are copied from these, so never re-wrapped
        print(line, file=console.file, flush=True)
