"""The object-store inbox sensor: item files under ``MATCHING_INBOX_URL/<project>/`` become batches.

Defined only when ``MATCHING_INBOX_URL`` is set (``definitions.py``). It judges, archives and starts
batches exactly as the local ``new_items_sensor`` does (``results/object_inbox.py`` for the files,
``sensors.start_scanned_batches`` for the runs); batches that a crashed tick stored without
partitions are recovered by the local sensor, which looks at every stored batch.
"""

import dagster as dg

from matching_pipeline.clients.object_store import open_store
from matching_pipeline.core.models import STAGES
from matching_pipeline.defs.jobs import stage_jobs
from matching_pipeline.defs.resources import InboxResource, ResultsDatabaseResource
from matching_pipeline.defs.sensors import start_scanned_batches
from matching_pipeline.results.ingest import sightings_from_cursor
from matching_pipeline.results.object_inbox import scan_object_inbox


@dg.sensor(
    jobs=[stage_jobs[STAGES[0]]],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description=(
        "Ingests item files from the object-store inbox (MATCHING_INBOX_URL/<project>/): one batch "
        "per file, one partition per ten items; refused files go under rejected/ with a reason object."
    ),
)
def object_inbox_sensor(
    context: dg.SensorEvaluationContext, results: ResultsDatabaseResource, inbox: InboxResource
) -> dg.SensorResult | dg.SkipReason:
    """30 s between ticks rather than the local sensor's 15: every tick lists the bucket prefix,
    which on S3 is billed per request, and an upload is not urgent to the second."""
    if not inbox.url:
        return dg.SkipReason("MATCHING_INBOX_URL is not set")
    fs, root = open_store(inbox.url, inbox.s3_endpoint_url)
    scan = scan_object_inbox(
        results.get(),
        fs,
        root,
        read=inbox.read_options(),
        rules=inbox.rules(),
        seen=sightings_from_cursor(context.cursor),
    )
    context.update_cursor(scan.cursor())
    return start_scanned_batches(context, scan)
