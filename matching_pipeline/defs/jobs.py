"""One job per stage, plus the catalog's: stages never share a run (see ``stages.py``)."""

import dagster as dg

from matching_pipeline.defs.stages import STAGE_SPECS

catalog_job = dg.define_asset_job("catalog_job", selection=["catalog"], description="Rebuild the catalog index.")

stage_jobs = {
    stage: dg.define_asset_job(
        spec.job_name,
        selection=[spec.asset_name],
        description=f"The {stage} stage over a range of chunks; the cascade sensor starts the next stage.",
    )
    for stage, spec in STAGE_SPECS.items()
}
