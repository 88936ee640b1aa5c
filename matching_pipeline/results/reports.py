"""Per-project summaries and result exports, for the summary asset and the CLI alike."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matching_pipeline.results.exports import write_csv
from matching_pipeline.results.store import ResultsDatabase

EXPORT_COLUMNS = ["item_id", "catalog_id", "stage", "method", "confidence", "error", "description", "part_number", "manufacturer", "gtin"]


def export_results(db: ResultsDatabase, project: str, path: Path, *, batch_id: int | None = None) -> pd.DataFrame:
    """Write one row per item (its final answer) to ``path`` as CSV; extra input columns follow."""
    frame = db.final_matches(project, batch_id)
    if frame.empty:
        frame = pd.DataFrame(columns=EXPORT_COLUMNS)
    else:
        extra = pd.DataFrame(frame.pop("extra").tolist(), index=frame.index)
        frame = pd.concat([frame[EXPORT_COLUMNS], extra.drop(columns=[c for c in extra.columns if c in EXPORT_COLUMNS])], axis=1)
    write_csv(frame, path)  # formula-like text cells neutralised (see exports.py)
    return frame


def format_summary(summary: dict) -> str:
    lines = [
        f"project {summary['project']}: {summary['items']} items, {summary['matched']} matched "
        f"({summary['match_rate']:.1%}), {summary['unmatched']} unmatched, {summary['errors']} with errors"
    ]
    for stage, entry in summary["by_stage"].items():
        methods = ", ".join(f"{method} {n}" for method, n in sorted(entry["methods"].items()))
        lines.append(f"  {stage:<11} {entry['matched']:>6} matched ({entry['match_rate']:.1%})  [{methods}]")
    for stage, note in summary.get("notes", {}).items():
        lines.append(f"  {stage}: {note}")
    if summary.get("open_reviews"):
        lines.append(
            f"  {summary['open_reviews']} decisions to review: "
            f"matching-pipeline review export --project {summary['project']} --out review.csv"
        )
    return "\n".join(lines)
