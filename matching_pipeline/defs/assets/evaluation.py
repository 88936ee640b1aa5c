"""Each labelled project's figures on its user's labels, and a check that warns below target.

A project is evaluated when ``<data_dir>/labels/<project>.csv`` exists (the same file format
as ``matching-pipeline evaluate --labels``); its human review decisions count as labels too.
The asset writes each project's ``evaluation.json`` and chart where the CLI would, so the UI
and the command line show one set of figures.
"""

from pathlib import Path
from typing import Any

import dagster as dg

from matching_pipeline.core.readers import InputError
from matching_pipeline.defs.resources import CatalogResource, ResultsDatabaseResource
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.results.evaluation import evaluate_project


class EvaluationResource(dg.ConfigurableResource):
    """Where labels are found, where reports go, and the precision projects are held to."""

    labels_dir: str
    out_dir: str
    target_precision: float = 0.99

    def labels_files(self) -> dict[str, Path]:
        """``{project: labels file}`` for every ``<project>.csv`` in the labels directory."""
        folder = Path(self.labels_dir)
        return {path.stem: path for path in sorted(folder.glob("*.csv"))} if folder.is_dir() else {}


def _number(value: float | None) -> dg.MetadataValue:
    return dg.MetadataValue.text("n/a (no labelled accepts)") if value is None else dg.MetadataValue.float(value)


def _table(rows: dict[str, dict[str, Any]]) -> str:
    header = "| project | precision | labelled | unlabelled | coverage | recall | suggestion |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for project, f in rows.items():
        if "error" in f:
            lines.append(f"| {project} | labels rejected | | | | | {f['error'].splitlines()[0]} |")
        else:
            lines.append(
                f"| {project} | {f['precision']} | {f['labelled']} | {f['unlabelled']} | {f['coverage']} | "
                f"{f['recall']} | {f['suggestion']} |"
            )
    return "\n".join(lines)


@dg.asset(
    deps=[spec.asset_name for spec in STAGE_SPECS.values()],
    group_name="reporting",
    kinds={"python"},
    description=(
        "Precision, coverage and recall of every project that has a labels file "
        "(<data_dir>/labels/<project>.csv), by stage and method, candidate recall@k, a threshold "
        "sweep of the enhanced stage and the thresholds that reach the target precision."
    ),
)
def evaluation(
    context: dg.AssetExecutionContext,
    results: ResultsDatabaseResource,
    catalog_source: CatalogResource,
    evaluation_config: EvaluationResource,
) -> dg.MaterializeResult:
    db = results.get()
    projects = {batch.project for batch in db.list_batches()}
    files = evaluation_config.labels_files()
    catalog_ids: frozenset[str] | None = None
    if files:
        try:
            catalog_ids = catalog_source.catalog_ids()
        except (InputError, OSError) as exc:
            context.log.warning(f"catalog not readable, catalog ids of the labels not checked: {exc}")
    rows: dict[str, dict[str, Any]] = {}
    metadata: dict[str, Any] = {}
    for project, path in files.items():
        if project not in projects:
            context.log.warning(f"{path.name}: no project {project!r} in the results database; skipped")
            continue
        try:
            outcome = evaluate_project(
                db,
                project,
                path,
                Path(evaluation_config.out_dir) / project,
                catalog_ids=catalog_ids,
                target_precision=evaluation_config.target_precision,
            )
        except ValueError as exc:  # a bad labels file is the user's to fix; the other projects go on
            context.log.error(str(exc))
            rows[project] = {"error": str(exc)}
            continue
        automatic, suggestion = outcome.report["automatic"], outcome.report["suggestion"]
        rows[project] = {
            "precision": automatic["precision"],
            "precision_lower_95": automatic["precision_lower_95"],
            "labelled": automatic["labelled"],
            "unlabelled": automatic["unlabelled"],
            "coverage": automatic["coverage"],
            "recall": automatic["recall"],
            "suggestion": suggestion["message"],
            "suggested_threshold_match_score": suggestion.get("threshold_match_score") if suggestion["reached"] else None,
            "suggested_threshold_margin": suggestion.get("threshold_margin") if suggestion["reached"] else None,
            "report": str(outcome.report_path),
            "chart": str(outcome.chart_path),
        }
        metadata[f"{project}/precision"] = _number(automatic["precision"])
        metadata[f"{project}/coverage"] = _number(automatic["coverage"])
        metadata[f"{project}/recall"] = _number(automatic["recall"])
        metadata[f"{project}/suggestion"] = dg.MetadataValue.text(suggestion["message"])
        metadata[f"{project}/chart"] = dg.MetadataValue.path(str(outcome.chart_path))
        metadata[f"{project}/report"] = dg.MetadataValue.path(str(outcome.report_path))
        context.log.info(
            f"{project}: precision {automatic['precision']} on {automatic['labelled']} labelled accepts; {suggestion['message']}"
        )
    return dg.MaterializeResult(
        metadata={
            "projects_evaluated": len(rows),
            "target_precision": evaluation_config.target_precision,
            "labels_dir": evaluation_config.labels_dir,
            "projects": dg.MetadataValue.json(rows),
            "summary": dg.MetadataValue.md(_table(rows) if rows else f"no labels files in {evaluation_config.labels_dir}"),
            **metadata,
        }
    )


@dg.asset_check(asset=evaluation, description="Warns when a project's precision on its labels is below the target precision.")
def precision_on_labels(context: dg.AssetCheckExecutionContext, evaluation_config: EvaluationResource) -> dg.AssetCheckResult:
    """Reads the figures of the latest ``evaluation`` materialisation: the check judges what the
    asset measured rather than measuring again."""
    event = context.instance.get_latest_materialization_event(evaluation.key)
    materialization = event.asset_materialization if event else None
    rows: dict[str, dict[str, Any]] = {}
    if materialization is not None and "projects" in materialization.metadata:
        rows = materialization.metadata["projects"].value
    target = evaluation_config.target_precision
    below = {p: f["precision"] for p, f in rows.items() if f.get("precision") is not None and f["precision"] < target}
    rejected = sorted(p for p, f in rows.items() if "error" in f)
    problems = [f"{p}: precision {v:.3f} < {target:g}" for p, v in sorted(below.items())]
    problems += [f"{p}: labels file rejected" for p in rejected]
    if not rows:
        description = "no project has a labels file: nothing to check"
    elif problems:
        description = "; ".join(problems)
    else:
        description = f"every labelled project reaches precision {target:g} on its labels"
    return dg.AssetCheckResult(
        passed=not problems,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "target_precision": target,
            "projects_checked": len(rows),
            "below_target": dg.MetadataValue.json(below),
            "labels_rejected": dg.MetadataValue.json(rejected),
        },
    )
