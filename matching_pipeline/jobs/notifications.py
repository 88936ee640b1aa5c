"""Webhook notifications as the job layer's callers use them.

The sensors and the sending live in the Dagster layer (``defs/notifications.py``, with the HTTP
posting in ``clients/webhooks.py``); runs executed in process are invisible to those sensors, so
the CLI and the API call :func:`notify_job_if_finished` when such a run may have ended a job.
"""

from matching_pipeline.clients.webhooks import verify
from matching_pipeline.defs.notifications import notify_job_if_finished

__all__ = ["notify_job_if_finished", "verify"]
