"""Evaluation of a project on the user's labels: load, compute, write the JSON and the chart.

Shared by ``matching-pipeline evaluate`` and the ``evaluation`` asset, so that both report the
same figures. The figures themselves come from :mod:`matching_pipeline.core.evaluation`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matching_pipeline.core.enhanced import EnhancedSettings
from matching_pipeline.core.evaluation import (
    STAGE_ORDER,
    evaluate,
    human_labels,
    merge_labels,
    read_labels,
)
from matching_pipeline.core.models import HUMAN_STAGE, Decision
from matching_pipeline.results.store import ResultsDatabase

REPORT_NAME = "evaluation.json"
CHART_NAME = "precision_coverage.png"
CHUNKS_PER_QUERY = 500
"""Chunk keys per results query: keeps each ``IN (...)`` list far below SQLite's variable limit."""


@dataclass(frozen=True)
class EvaluationOutcome:
    report: dict[str, Any]
    report_path: Path
    chart_path: Path


def project_item_ids(db: ResultsDatabase, project: str) -> list[str]:
    frame = db.final_matches(project)
    return [] if frame.empty else [str(i) for i in frame["item_id"]]


def load_decisions(db: ResultsDatabase, project: str) -> dict[str, dict[str, Decision]]:
    """``{stage: {item_id: Decision}}`` of every stage (human included) that decided anything."""
    keys = [key for batch in db.list_batches(project) for key in batch.chunk_keys]
    decisions: dict[str, dict[str, Decision]] = {}
    for stage in STAGE_ORDER:
        found: dict[str, Decision] = {}
        for start in range(0, len(keys), CHUNKS_PER_QUERY):
            for chunk in db.stage_results(stage, keys[start : start + CHUNKS_PER_QUERY]).values():
                found.update(chunk)
        if found:
            decisions[stage] = found
    return decisions


def current_thresholds(settings: EnhancedSettings | None = None) -> dict[str, float]:
    settings = settings or EnhancedSettings()
    return {"threshold_match_score": settings.threshold_match_score, "threshold_margin": settings.threshold_margin}


def evaluate_project(
    db: ResultsDatabase,
    project: str,
    labels_path: Path,
    out_dir: Path,
    *,
    catalog_ids: Collection[str] | None,
    target_precision: float,
) -> EvaluationOutcome:
    """Evaluate ``project`` on the labels file and its human decisions; write report and chart.

    Raises :class:`~matching_pipeline.core.readers.InputError` naming the rows of a bad labels
    file, and ``ValueError`` for a project with no items.
    """
    item_ids = project_item_ids(db, project)
    if not item_ids:
        raise ValueError(f"project {project!r} has no items in the results database")
    file_labels = read_labels(labels_path, item_ids=item_ids, catalog_ids=catalog_ids, project=project)
    decisions = load_decisions(db, project)
    humans = db.human_decisions(project)
    choices = [] if humans.empty else list(zip(humans["item_id"], humans["catalog_id"], strict=True))
    labels = merge_labels(file_labels, human_labels(choices))
    report = evaluate(item_ids, decisions, labels, current=current_thresholds(), target_precision=target_precision)
    report = {"project": project, "labels_file": str(labels_path), **report}
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / REPORT_NAME
    chart_path = out_dir / CHART_NAME
    report["chart"] = str(chart_path)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    draw_chart(report, chart_path)
    return EvaluationOutcome(report, report_path, chart_path)


def draw_chart(report: Mapping[str, Any], path: Path) -> None:
    """Precision against coverage of every sweep point, the current and suggested settings,
    the pipeline's automatic answer and the target line, as a PNG."""
    # The object-oriented API with the Agg canvas: no global pyplot state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = [p for p in report["sweep"] if p["precision"] is not None]
    if points:
        axes.scatter(
            [p["coverage"] for p in points], [p["precision"] for p in points], s=10, color="0.7",
            label="enhanced stage at a threshold pair",
        )
        frontier: list[tuple[float, float]] = []
        for p in sorted(points, key=lambda p: (-p["coverage"], -p["precision"])):
            if not frontier or p["precision"] > frontier[-1][1]:
                frontier.append((p["coverage"], p["precision"]))
        axes.plot([c for c, _ in frontier], [q for _, q in frontier], color="0.4", linewidth=1, label="best precision at each coverage")
    suggestion = report["suggestion"]
    current = suggestion.get("current")
    if current and current["precision"] is not None:
        # A ring drawn on top: the current setting often coincides with the pipeline's own point.
        axes.scatter([current["coverage"]], [current["precision"]], s=130, marker="o", facecolors="none",
                     edgecolors="tab:blue", linewidths=2, zorder=5,
                     label=f"current (score {current['threshold_match_score']:g}, margin {current['threshold_margin']:g})")
    if suggestion.get("reached"):
        axes.scatter([suggestion["coverage"]], [suggestion["precision"]], s=140, marker="*", color="tab:red", zorder=4,
                     label=f"suggested (score {suggestion['threshold_match_score']:g}, margin {suggestion['threshold_margin']:g})")
    automatic = report["automatic"]
    if automatic["precision"] is not None:
        axes.scatter([automatic["coverage"]], [automatic["precision"]], s=50, marker="D", color="tab:green", zorder=3,
                     label="answer of the automatic stages")
    target = report["target_precision"]
    axes.axhline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target precision {target:g}")
    lows = [p["precision"] for p in points] + [target]
    axes.set_ylim(max(0.0, min(lows) - 0.02), 1.005)
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("coverage (share of the project's items accepted)")
    axes.set_ylabel("precision on labelled accepts")
    axes.set_title(f"{report.get('project', '')}: precision and coverage on the labels")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _line(name: str, f: Mapping[str, Any], width: int = 28) -> str:
    return (
        f"  {name:<{width}} accepts {f['accepts']:>6}  precision {_fmt(f['precision'])} "
        f"({f['correct']}/{f['labelled']} labelled, {f['unlabelled']} unlabelled)  "
        f"coverage {_fmt(f['coverage'])}  recall {_fmt(f['recall'])}"
    )


SWEEP_MARGINS_SHOWN = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def format_report(report: Mapping[str, Any]) -> str:
    """The evaluation as text for a terminal; the JSON holds every figure."""
    labels = report["labels"]
    auto = report["automatic"]
    lines = [
        f"project {report['project']}: {report['items']} items; labels: {labels['file_rows']} rows from the file, "
        f"{labels['human_decisions']} human decisions ({labels['human_overridden_by_file']} contradicted by the file, which wins)",
        f"  {labels['items_labelled_in_project']} items labelled: {labels['items_with_match_in_project']} with their right entry, "
        f"{labels['items_without_match']} without an entry in the catalog, {labels['non_match_pairs']} non-match pairs",
        "",
        f"answer of the automatic stages, before any person's decision (target precision {report['target_precision']:g}):",
        _line("all", auto) + (f"  95% lower bound {_fmt(auto['precision_lower_95'])}" if auto["labelled"] else ""),
    ]
    for name, figures in auto["by_method"].items():
        lines.append(_line(name, figures))
    if HUMAN_STAGE in report["stages"]:
        lines.append(_line("final, with human decisions", report["final"]))
    lines += ["", "each stage's own accepts:"]
    for stage, entry in report["stages"].items():
        lines.append(_line(f"{stage} (decided {entry['decided']})", entry))
        for method, figures in entry["by_method"].items():
            lines.append(_line(f"  {method}", figures))
    lines += ["", "candidate recall of what each stage left unmatched (right entry among the first k candidates):"]
    for stage, entry in report["stages"].items():
        recall = entry.get("candidate_recall_of_unmatched")
        if recall is None:
            continue
        ats = "  ".join(f"@{k} {_fmt(v)}" for k, v in recall["recall_at"].items())
        lines.append(f"  {stage:<11} {recall['items']:>5} labelled items left  {ats}  any {_fmt(recall['among_saved'])}")
    current = report["current_settings"]
    margins = sorted({m for m in SWEEP_MARGINS_SHOWN} | {current["threshold_margin"]})
    lines += [
        "",
        "threshold sweep of the enhanced stage: precision/coverage (identifier accepts included); "
        "rows threshold_match_score, columns threshold_margin, * = current",
        "  score  " + "".join(f"{m:>13g}" for m in margins),
    ]
    grid = {(p["threshold_match_score"], p["threshold_margin"]): p for p in report["sweep"]}
    for score in sorted({s for s, _ in grid}):
        cells = []
        for m in margins:
            p = grid.get((score, m))
            mark = "*" if (score, m) == (current["threshold_match_score"], current["threshold_margin"]) else " "
            cells.append(f"{mark}{_fmt(p['precision']) if p else '':>5}/{_fmt(p['coverage'], 2) if p else '':<5}".rjust(13))
        lines.append(f"  {score:<6g} " + "".join(cells))
    lines += ["", "suggestion: " + report["suggestion"]["message"]]
    if report["wrong_accepts"]:
        lines += ["", f"wrong automatic accepts ({report['wrong_accepts_total']}, first 10):"]
        for wrong in report["wrong_accepts"][:10]:
            lines.append(
                f"  {wrong['item_id']} -> {wrong['catalog_id']} ({wrong['stage']}/{wrong['method']}); "
                f"labelled {wrong['expected'] or 'not this'}"
            )
    return "\n".join(lines)
