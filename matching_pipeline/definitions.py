"""The one place where assets, resources, sensors and schedules meet."""

from __future__ import annotations

import dagster as dg

from matching_pipeline.core.attributes import Vocabulary, use_vocabulary
from matching_pipeline.defs.assets.ai import ai_matches
from matching_pipeline.defs.assets.catalog import catalog
from matching_pipeline.defs.assets.enhanced import enhanced_matches
from matching_pipeline.defs.assets.evaluation import EvaluationResource, evaluation, precision_on_labels
from matching_pipeline.defs.assets.summary import match_summary
from matching_pipeline.defs.assets.web_search import web_search_matches
from matching_pipeline.defs.cascade import cascade_sensor
from matching_pipeline.defs.jobs import catalog_job, stage_jobs
from matching_pipeline.defs.notifications import notification_sensors
from matching_pipeline.defs.object_inbox import object_inbox_sensor
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.defs.requests import job_requests_sensor
from matching_pipeline.defs.resources import CatalogResource, InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.retention import retire_chunks_job, retire_chunks_schedule
from matching_pipeline.defs.schedules import schedules
from matching_pipeline.defs.search_resource import SearchResource
from matching_pipeline.defs.sensors import catalog_sensor, new_items_sensor
from matching_pipeline.defs.stages import without_pool
from matching_pipeline.settings import Settings, secret


def _secret_or(name: str, default: str) -> str | dg.EnvVar:
    """Read ``name`` through ``EnvVar`` when set, so its value never lands in run config or the UI."""
    return dg.EnvVar(name) if secret(name) else default


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        "results": ResultsDatabaseResource(
            url=_secret_or("MATCHING_DATABASE_URL", settings.database_url),
            review_confidence=settings.review.confidence,
            review_close_score=settings.review.close_score,
        ),
        "catalog_source": CatalogResource(
            path=str(settings.catalog_path),
            encoding=settings.catalog_encoding,
            columns=",".join(f"{k}={v}" for k, v in settings.catalog_columns.items()),
            index_dir=str(settings.index_dir),
            index_url=settings.index_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            max_description_chars=settings.max_description_chars,
            max_field_chars=settings.max_field_chars,
        ),
        "inbox": InboxResource(
            inbox_dir=str(settings.inbox_dir),
            data_dir=str(settings.data_dir),
            encoding=settings.items_encoding,
            columns=",".join(f"{k}={v}" for k, v in settings.item_columns.items()),
            max_description_chars=settings.max_description_chars,
            max_field_chars=settings.max_field_chars,
            settle_seconds=settings.inbox_settle_seconds,
            require_done=settings.inbox_require_done,
            url=settings.inbox_url,
            s3_endpoint_url=settings.s3_endpoint_url,
        ),
        "openai": OpenAIResource.from_settings(settings),
        "search": SearchResource.from_settings(settings),
        "evaluation_config": EvaluationResource(
            labels_dir=str(settings.labels_dir),
            out_dir=str(settings.evaluation_dir),
            target_precision=settings.target_precision,
        ),
    }


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    settings = settings or Settings.from_env()
    # The attribute checks read one vocabulary; a user's additions join the packaged words here.
    use_vocabulary(Vocabulary.load(settings.vocabulary_dir))
    resources = build_resources(settings)
    # A stage that can only skip (no model / no search provider) stays out of its pool: its runs
    # send no requests, so they must not queue behind other runs for the slot (defs/stages.py).
    openai, search = resources["openai"], resources["search"]
    assert isinstance(openai, OpenAIResource) and isinstance(search, SearchResource)
    ai = ai_matches if openai.configured else without_pool(ai_matches)
    web = web_search_matches if search.configured else without_pool(web_search_matches)
    return dg.Definitions(
        assets=[catalog, enhanced_matches, ai, web, match_summary, evaluation],
        asset_checks=[precision_on_labels],
        jobs=[catalog_job, *stage_jobs.values(), retire_chunks_job],
        sensors=[
            new_items_sensor, cascade_sensor, job_requests_sensor, catalog_sensor, *notification_sensors,
            *([object_inbox_sensor] if settings.inbox_url else []),
        ],
        schedules=[*schedules, retire_chunks_schedule],
        resources=resources,
        # Every run here has one step (stages never share a run, see defs/stages.py): the default
        # multiprocess executor would start a second Python process per run (seconds of imports)
        # to run that one step. In process, a small drop's three runs start seconds sooner.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Built when Dagster loads the code location, so it reads the environment of that moment."""
    return build_definitions()
