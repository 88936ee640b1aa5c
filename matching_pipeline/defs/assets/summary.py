"""The per-project summary and export, refreshed on demand or by schedule."""


from pathlib import Path

import dagster as dg

from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.resources import InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.reports import export_results


@dg.asset(
    deps=[spec.asset_name for spec in STAGE_SPECS.values()],
    group_name="reporting",
    kinds={"python"},
    description="Totals and match rate by stage and method for every project, and a CSV export of each.",
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
                **{f"{stage}_matched": summary["by_stage"].get(stage, {}).get("matched", 0) for stage in STAGES},
                "export": str(path),
            }
        )
        context.log.info(f"{project}: {summary['matched']}/{summary['items']} matched; export {path}")
    table = "\n".join(
        ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        + ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    ) if rows else "no projects yet"
    return dg.MaterializeResult(
        metadata={
            "projects": len(projects),
            "items": sum(r["items"] for r in rows),
            "matched": sum(r["matched"] for r in rows),
            "summary": dg.MetadataValue.md(table),
        }
    )
