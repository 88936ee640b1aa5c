"""A local search API that speaks SearXNG's and Brave Search's JSON, scriptable per test.

A real HTTP server on 127.0.0.1 (random free port, background thread), so tests and the bench
exercise the real httpx stack, our retries, pacing and error handling. Two routes:

* ``GET /search?q=...&format=json``: SearXNG. With ``json_enabled=False`` it answers 403, as a
  SearXNG whose ``search.formats`` lacks ``json`` does.
* ``GET /res/v1/web/search?q=...&count=...``: Brave; a missing or wrong ``X-Subscription-Token``
  gets 401 with Brave's error JSON.

Results come from ``results`` (query -> list of ``{"title", "url", "snippet"}``), else from
``responder(query)``, else none. Behaviours queued with :meth:`FakeSearch.script` apply to the
next requests (``ok`` once the queue is empty): ``rate_limit`` (429 + Retry-After), ``error``
(503), ``slow`` (answers after ``slow_s``: a client timeout), ``malformed`` (200 with a body
that is not JSON). ``qps_limit`` adds a token bucket (burst = one second's worth) that answers
429 with Retry-After when exceeded; ``latency_s`` delays every answer.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.servers import QuietHandler, ScriptedServer

BEHAVIOURS = ("ok", "rate_limit", "error", "slow", "malformed")
BRAVE_KEY = "test-brave-key"

Responder = Callable[[str], list[dict[str, str]]]


@dataclass
class Received:
    at: float
    route: str
    path: str
    query: str
    status: int


@dataclass
class FakeSearch(ScriptedServer):
    behaviours = BEHAVIOURS
    latency_s: float = 0.0
    qps_limit: float | None = None
    retry_after_s: float = 1.0
    slow_s: float = 3.0
    json_enabled: bool = True
    brave_key: str = BRAVE_KEY
    results: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    responder: Responder | None = None
    received: list[Received] = field(default_factory=list)

    # -- control -------------------------------------------------------------------------

    def query_counts(self) -> Counter[str]:
        return Counter(r.query for r in self.received)

    # -- serving -------------------------------------------------------------------------

    def rate_per_second(self) -> float | None:
        return self.qps_limit

    def respond(self, route: str, path: str, params: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes, float]:
        """Status, headers, body and delay for one request."""
        query = params.get("q", "")
        status, extra, body, delay = self._answer(route, query, params, headers)
        with self._lock:
            self.received.append(Received(time.monotonic(), route, path, query, status))
        return status, extra, body, delay

    def _answer(self, route: str, query: str, params: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes, float]:
        if route == "searxng" and (not self.json_enabled or params.get("format") != "json"):
            return 403, {"content-type": "text/html"}, b"<html><body><h1>403 Forbidden</h1></body></html>", 0.0
        if route == "brave" and headers.get("x-subscription-token") != self.brave_key:
            return 401, {}, _json(
                {"type": "ErrorResponse", "error": {"status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID", "detail": "The provided subscription token is invalid."}}
            ), 0.0
        behaviour, wait = self._next()
        if behaviour == "rate_limit":
            retry_after = wait if wait is not None else self.retry_after_s
            return 429, {"retry-after": str(max(1, math.ceil(retry_after)))}, _json({"error": "Too Many Requests"}), 0.0
        if behaviour == "error":
            return 503, {}, _json({"error": "Service Unavailable"}), 0.0
        if behaviour == "malformed":
            return 200, {}, b'{"results": [{"title": "cut', self.latency_s
        delay = self.slow_s if behaviour == "slow" else self.latency_s
        found = self.results.get(query)
        if found is None:
            found = self.responder(query) if self.responder else []
        if route == "brave":
            found = found[: int(params.get("count") or 20)]
            payload = {
                "type": "search",
                "query": {"original": query},
                "web": {"type": "search", "results": [{"title": r["title"], "url": r["url"], "description": r["snippet"]} for r in found]},
            }
        else:
            payload = {
                "query": query,
                "number_of_results": len(found),
                "results": [{"title": r["title"], "url": r["url"], "content": r["snippet"], "engine": "fake"} for r in found],
                "answers": [],
                "suggestions": [],
                "unresponsive_engines": [],
            }
        return 200, {}, _json(payload), delay


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


_ROUTES = {"/search": "searxng", "/res/v1/web/search": "brave"}


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx's connection pool expects
    fake: FakeSearch

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        route = _ROUTES.get(parts.path.rstrip("/"))
        if route is None:
            self._send(404, {}, _json({"error": f"no route {parts.path}"}))
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        status, headers, body, delay = self.fake.respond(route, self.path, params, self.headers)
        if delay:
            time.sleep(delay)
        self._send(status, headers, body)


FakeSearch.handler = _Handler
