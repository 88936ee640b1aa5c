"""The per-project summary and export, refreshed on demand or by schedule."""


from pathlib import Path

import dagster as dg

from matching_pipeline.core.models import RESULT_STAGES
from matching_pipeline.defs.resources import InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.results.reports import export_results


@dg.asset(
    deps=[spec.asset_name for spec in STAGE_SPECS.values()],
    group_name="reporting",
    kinds={"python"},
    description=(
        "Totals and match rate by stage and method for every project, its open review count "
        "(decisions waiting for a person: `matching-pipeline review export`), and a CSV export of each."
    ),
)
def match_summary(
    context: dg.AssetExecutionContext, results: ResultsDatabaseResource, inbox: InboxResource
) -> dg.MaterializeResult:
    db = results.get()
    projects = sorted({batch.project for batch in db.list_batches()})
    rows = []
    for project in projects:
        summary = db.project_summary(project)
        path = Path(inbox.data_dir) / "exports" / f"{project}.csv"
        export_results(db, project, path)
        rows.append(
            {
                "project": project,
                "items": summary["items"],
                "matched": summary["matched"],
                "match_rate": summary["match_rate"],
                **{f"{stage}_matched": summary["by_stage"].get(stage, {}).get("matched", 0) for stage in RESULT_STAGES},
                "open_reviews": summary["open_reviews"],
                "export": str(path),
            }
        )
        context.log.info(
            f"{project}: {summary['matched']}/{summary['items']} matched, {summary['open_reviews']} to review; export {path}"
        )
    table = "\n".join(
        ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        + ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    ) if rows else "no projects yet"
    return dg.MaterializeResult(
        metadata={
            "projects": len(projects),
            "items": sum(r["items"] for r in rows),
            "matched": sum(r["matched"] for r in rows),
            "open_reviews": sum(r["open_reviews"] for r in rows),
            "open_reviews_by_project": dg.MetadataValue.json({r["project"]: r["open_reviews"] for r in rows}),
            # One number per project, so the UI plots each project's queue over time.
            **{f"open_reviews/{r['project']}": r["open_reviews"] for r in rows},
            "summary": dg.MetadataValue.md(table),
        }
    )
