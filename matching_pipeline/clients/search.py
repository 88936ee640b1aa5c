"""Web search over HTTP: SearXNG (self-hosted) and Brave Search behind one small interface.

The web-search stage needs one thing from a search engine: for a query, a few results with a
title, a URL and a snippet. Everything provider-specific (URL, parameters, auth header, response
shape, what a 401 or 403 *means*) sits in a provider class; everything shared (timeouts, retries
with backoff that honour ``Retry-After``, pacing to a queries-per-second budget, a bound on
requests in flight) sits in :class:`SearchClient`, so the two providers cannot drift apart.

Errors come in three kinds because the caller must treat them differently:

* :class:`SearchConfigurationError`: nothing will work until a person fixes the setup (JSON
  format disabled in SearXNG, a rejected key, an exhausted quota). The stage fails at once with
  the message, instead of burning through every item.
* :class:`SearchTransientError`: 429, 5xx, timeouts, dropped connections. Retried here; if the
  retries run out, the one query is recorded as failed and the item stays unmatched.
* :class:`SearchResponseError`: the server answered 200 with something that is not the JSON it
  promised. Not retried (the same server gives the same page); recorded against the query.

No secret ever reaches a message: errors name the host and the *variable* holding a key.
"""

from __future__ import annotations

import asyncio
import html
import math
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True)
class SearchResult:
    """One web result, reduced to what evidence is read from. Text is plain (tags stripped)."""

    title: str
    url: str
    snippet: str

    def to_dict(self) -> dict[str, str]:
        return {"title": self.title, "url": self.url, "snippet": self.snippet}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchResult:
        return cls(title=str(data.get("title") or ""), url=str(data.get("url") or ""), snippet=str(data.get("snippet") or ""))


@dataclass(frozen=True)
class SearchOutcome:
    """A query's results and what answering it cost: attempts made, seconds of the last one."""

    results: list[SearchResult]
    attempts: int
    latency_s: float


class SearchError(Exception):
    """Base of every error this module raises."""


class SearchConfigurationError(SearchError):
    """The provider refuses every request until its setup is fixed: stop, do not retry."""


class SearchResponseError(SearchError):
    """The provider answered, but not with the JSON it should have: this query failed."""


class SearchTransientError(SearchError):
    """Worth retrying: rate limited, server error, timeout or connection failure."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


def plain_text(value: Any) -> str:
    """Strip tags and entities: Brave marks matched words with ``<strong>`` in snippets."""
    return " ".join(html.unescape(_TAG.sub("", str(value or ""))).split())


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Seconds a rate-limited server asks us to wait: ``Retry-After`` (seconds or HTTP date),
    else the first window of Brave's ``X-RateLimit-Reset``; None when it says nothing."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
            except (TypeError, ValueError):
                return None
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset.split(",")[0]))
        except ValueError:
            return None
    return None


class SearchProvider(ABC):
    """What differs between search engines: the request, the auth, the response shape, and
    which refusals are configuration errors."""

    name: str
    label: str

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.host = httpx.URL(self.base_url).host or "?"

    @abstractmethod
    def build_request(self, http: httpx.AsyncClient, query: str, count: int) -> httpx.Request: ...

    @abstractmethod
    def parse(self, payload: Any) -> list[SearchResult]:
        """Results from the decoded JSON; raise :class:`SearchResponseError` if it is not the shape promised."""

    def configuration_error(self, status: int) -> str | None:
        """The message for a status that means "fix the setup", else None."""
        return None


class SearxngProvider(SearchProvider):
    """A SearXNG instance's JSON API: ``GET /search?q=...&format=json``."""

    name = "searxng"
    label = "SearXNG"

    def build_request(self, http: httpx.AsyncClient, query: str, count: int) -> httpx.Request:
        # SearXNG has no result-count parameter; the client keeps the first ``count``.
        return http.build_request(
            "GET", f"{self.base_url}/search", params={"q": query, "format": "json"}, headers={"Accept": "application/json"}
        )

    def parse(self, payload: Any) -> list[SearchResult]:
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise SearchResponseError(f"{self.label} at {self.host} answered JSON without a 'results' list")
        return [
            SearchResult(plain_text(r.get("title")), str(r["url"]), plain_text(r.get("content")))
            for r in results
            if isinstance(r, dict) and r.get("url")
        ]

    def configuration_error(self, status: int) -> str | None:
        if status == 403:
            return (
                f"SearXNG at {self.host} answered 403 Forbidden to format=json: its JSON API is not enabled. "
                "Add `json` to `search.formats` in SearXNG's settings.yml (next to `html`) and restart it."
            )
        if status == 401:
            return f"SearXNG at {self.host} answered 401 Unauthorized: check the credentials in SEARXNG_URL."
        return None


class BraveProvider(SearchProvider):
    """Brave Search's web endpoint; the key travels in ``X-Subscription-Token``, never in the URL."""

    name = "brave"
    label = "Brave Search"
    key_variable = "BRAVE_SEARCH_API_KEY"

    def __init__(self, api_key: str, base_url: str = "https://api.search.brave.com"):
        super().__init__(base_url)
        self._api_key = api_key

    def build_request(self, http: httpx.AsyncClient, query: str, count: int) -> httpx.Request:
        return http.build_request(
            "GET",
            f"{self.base_url}/res/v1/web/search",
            params={"q": query, "count": min(count, 20)},
            headers={"Accept": "application/json", "X-Subscription-Token": self._api_key},
        )

    def parse(self, payload: Any) -> list[SearchResult]:
        if not isinstance(payload, dict):
            raise SearchResponseError(f"{self.label} answered JSON that is not an object")
        web = payload.get("web") or {}
        results = web.get("results", []) if isinstance(web, dict) else None
        if not isinstance(results, list):
            raise SearchResponseError(f"{self.label} answered JSON whose 'web.results' is not a list")
        return [
            SearchResult(
                plain_text(r.get("title")),
                str(r["url"]),
                plain_text(" ".join([str(r.get("description") or ""), *map(str, r.get("extra_snippets") or [])])),
            )
            for r in results
            if isinstance(r, dict) and r.get("url")
        ]

    def configuration_error(self, status: int) -> str | None:
        if status == 401:
            return f"Brave Search rejected the API key (401 Unauthorized): check {self.key_variable}."
        if status == 403:
            return (
                f"Brave Search refused the request (403 Forbidden): the plan of the key in {self.key_variable} "
                "does not cover the web search endpoint."
            )
        return None


class Pace:
    """A queries-per-second budget that outlives event loops.

    Requests are spaced ``1 / queries_per_second`` apart with an ``aiolimiter`` limiter of
    capacity one (no bursts: engines count a burst against their limit too). A limiter belongs to
    one event loop, and the stage runs one loop per block of chunks, so each new loop gets a new
    limiter and waits until one interval after the previous loop's last request: the pace holds
    across blocks as well as within them.
    """

    def __init__(self, queries_per_second: float):
        if queries_per_second <= 0:
            raise ValueError("queries_per_second must be positive")
        self.interval = 1.0 / queries_per_second
        self._last_sent = -math.inf
        self._start_at = -math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: AsyncLimiter | None = None

    async def wait(self) -> None:
        """Return when the next request may be sent."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._limiter is None:
            self._loop, self._limiter = loop, AsyncLimiter(1, self.interval)
            self._start_at = self._last_sent + self.interval
        await asyncio.sleep(max(0.0, self._start_at - time.monotonic()))
        await self._limiter.acquire()
        self._last_sent = time.monotonic()


class SearchClient:
    """Paced, bounded, retrying queries against one provider.

    ``pace`` spaces requests (every attempt, retries included, takes a slot); the caller owns it
    so that the budget holds across every client it makes. ``max_concurrency`` bounds requests
    in flight, so a slow provider is not flooded while the pace allows more.
    """

    def __init__(
        self,
        provider: SearchProvider,
        http: httpx.AsyncClient,
        pace: Pace,
        *,
        max_concurrency: int = 4,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 60.0,
    ):
        self.provider = provider
        self._http = http
        self._pace = pace
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_retries = max_retries
        # Jitter up to one first delay, so parallel retries spread out without waiting seconds.
        self._backoff = wait_exponential_jitter(multiplier=backoff_s, max=max_backoff_s, jitter=backoff_s)
        self._max_retry_after_s = max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, SearchTransientError) and error.retry_after_s is not None:
            return error.retry_after_s
        return self._backoff(state)

    async def search(self, query: str, count: int) -> SearchOutcome:
        """Up to ``count`` results for ``query``, retrying transient failures with backoff."""
        attempts = 0
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(SearchTransientError),
            reraise=True,
        ):
            with attempt:
                attempts += 1
                results, latency = await self._attempt(query, count)
        return SearchOutcome(results, attempts, latency)

    async def _attempt(self, query: str, count: int) -> tuple[list[SearchResult], float]:
        provider = self.provider
        async with self._slots:
            await self._pace.wait()
            began = time.perf_counter()
            try:
                response = await self._http.send(provider.build_request(self._http, query, count))
            except httpx.TimeoutException as exc:
                raise SearchTransientError(f"{provider.label} at {provider.host} timed out ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                raise SearchTransientError(f"{provider.label} at {provider.host} unreachable ({type(exc).__name__})") from None
            latency = time.perf_counter() - began
        status = response.status_code
        if (message := provider.configuration_error(status)) is not None:
            raise SearchConfigurationError(message)
        if status == 429:
            wait = retry_after_seconds(response)
            if wait is not None and wait > self._max_retry_after_s:
                raise SearchConfigurationError(
                    f"{provider.label} at {provider.host} is rate limiting for {wait:.0f} s (429): the quota is "
                    "probably used up; lower the queries-per-second setting or wait, then re-run."
                )
            raise SearchTransientError(f"{provider.label} at {provider.host} rate limited the query (429)", wait)
        if status >= 500:
            raise SearchTransientError(f"{provider.label} at {provider.host} failed with HTTP {status}")
        if status != 200:
            raise SearchResponseError(f"{provider.label} at {provider.host} answered HTTP {status}")
        try:
            payload = response.json()
        except ValueError:
            raise SearchResponseError(f"{provider.label} at {provider.host} answered malformed JSON") from None
        return provider.parse(payload)[:count], latency
