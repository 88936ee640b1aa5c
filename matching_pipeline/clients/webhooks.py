"""Webhook delivery, signed the Standard Webhooks way (https://www.standardwebhooks.com).

Every POST carries three headers made by the ``standardwebhooks`` library:

- ``webhook-id``: a unique message id (the same on every retry of one message), so a receiver
  can refuse a message it has already processed (replays, retries of a delivered message);
- ``webhook-timestamp``: seconds since the epoch; receivers refuse messages older or newer than
  five minutes, so a captured message cannot be replayed later;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``.

The secret is ``MATCHING_WEBHOOK_SECRET``: either a Standard Webhooks secret (``whsec_`` and
base64 key bytes, as the library and other senders generate) or any other string, whose UTF-8
bytes are then the key. A receiver verifies with ``standardwebhooks.Webhook(secret).verify(body,
headers)`` (:func:`verify` here does exactly that).

Delivery is retried with exponential backoff (tenacity) on connection errors, timeouts, 429 and
5xx; other 4xx answers are final. Nothing here logs: the caller decides what to log (the URL may
hold a token, the secret never leaves this module).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

USER_AGENT = "matching-pipeline"


class WebhookError(Exception):
    """The receiver answered with an error status."""

    def __init__(self, status: int):
        super().__init__(f"receiver answered {status}{' (retryable)' if _retryable_status(status) else ''}")
        self.status = status


def _retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, WebhookError) and _retryable_status(exc.status))


def signer(secret: str) -> Webhook:
    """The library's signer for ``secret`` (``whsec_...``, or any string taken as raw key bytes)."""
    return Webhook(secret if secret.startswith("whsec_") else secret.encode())


def signed_headers(secret: str | None, body: str, *, message_id: str | None = None, now: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body`` (none but the id and timestamp without a secret)."""
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    now = now or datetime.now(UTC)
    headers = {"webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp()))}
    if secret:
        headers["webhook-signature"] = signer(secret).sign(message_id, now, body)
    return headers


def verify(secret: str, body: bytes | str, headers: Mapping[str, str]) -> bool:
    """What a receiver does: check id, timestamp (five minutes' tolerance) and signature."""
    try:
        signer(secret).verify(body, dict(headers), json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def post_signed(
    url: str,
    payload: Mapping[str, Any],
    secret: str | None,
    *,
    attempts: int = 4,
    wait_max: float = 8.0,
    timeout: float = 10.0,
) -> int:
    """POST ``payload`` as JSON, signed; retries (same message id); returns the final status code.

    Each attempt is signed afresh, so a retry after a long backoff is not refused as too old.
    """
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    message_id = f"msg_{uuid.uuid4().hex}"

    @retry(
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=0.5, max=wait_max),
        retry=retry_if_exception(_retryable),
        reraise=True,
    )
    def _send() -> int:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **signed_headers(secret, body, message_id=message_id)}
        response = httpx.post(url, content=body.encode(), headers=headers, timeout=timeout)
        if response.status_code >= 400:
            raise WebhookError(response.status_code)
        return response.status_code

    return _send()
