"""The web search engine as a Dagster resource: which provider, where, how fast, how patient.

The resource holds configuration only; :mod:`matching_pipeline.clients.search` does the HTTP.
Keys and URLs arrive through ``dagster.EnvVar``, so their values never appear in run config,
the UI, logs or metadata (:meth:`SearchResource.describe` is what may be shown); every other
setting comes from :class:`~matching_pipeline.settings.Settings`.
"""

from __future__ import annotations

from typing import Literal

import dagster as dg
import httpx
from pydantic import Field

from matching_pipeline.clients.search import BraveProvider, Pace, SearchClient, SearchProvider, SearxngProvider
from matching_pipeline.settings import Settings, current_settings, secret

NOT_CONFIGURED_NOTE = (
    "no search provider is configured (set SEARXNG_URL for a SearXNG instance or BRAVE_SEARCH_API_KEY "
    "for Brave Search): the web-search stage skipped its items, which stay unmatched"
)


class SearchResource(dg.ConfigurableResource):
    """A web search provider and the budget the stage may spend on it.

    The pace (``queries_per_second``) is enforced inside the one step that may run at a time:
    the asset is in Dagster pool ``web_search`` and ``dagster.yaml`` admits one step per pool,
    so the budget holds across concurrent runs.
    """

    provider: Literal["searxng", "brave"] = "searxng"
    searxng_url: str = Field(default="", description="Base URL of a SearXNG instance with the JSON format enabled")
    brave_api_key: str = Field(default="", description="Brave Search subscription token (set via EnvVar)")
    brave_base_url: str = "https://api.search.brave.com"
    timeout_s: float = 10.0
    max_retries: int = 3
    backoff_s: float = Field(default=1.0, description="First retry delay; doubles per attempt, with jitter")
    max_retry_after_s: float = Field(
        default=60.0, description="A 429 asking to wait longer than this is reported as an exhausted quota"
    )
    queries_per_second: float = 1.0
    max_concurrency: int = 4
    cache_ttl_days: float = 30.0
    results_per_query: int = 5

    @property
    def configured(self) -> bool:
        """Whether the chosen provider has what it needs to be called at all."""
        return bool(self.brave_api_key) if self.provider == "brave" else bool(self.searxng_url)

    def describe(self) -> str:
        """Provider and host, safe to show: never the key, never credentials in a URL."""
        provider = self.build_provider()
        return f"{provider.name}@{provider.host}"

    def build_provider(self) -> SearchProvider:
        if self.provider == "brave":
            return BraveProvider(self.brave_api_key, self.brave_base_url)
        return SearxngProvider(self.searxng_url)

    def new_pace(self) -> Pace:
        """The run's query budget: make one per run and share it with every client of the run."""
        return Pace(self.queries_per_second)

    def new_client(self, http: httpx.AsyncClient, pace: Pace) -> SearchClient:
        return SearchClient(
            self.build_provider(),
            http,
            pace,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            backoff_s=self.backoff_s,
            max_retry_after_s=self.max_retry_after_s,
        )

    def new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s),
            limits=httpx.Limits(max_connections=self.max_concurrency),
            follow_redirects=True,
        )

    @classmethod
    def from_env(cls) -> SearchResource:
        """The resource as the environment describes it (see docs/web_search_stage.md)."""
        return cls.from_settings(current_settings())

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchResource:
        """The resource from ``settings``, with the URL and key as ``EnvVar`` when they are set.

        The provider defaults to SearXNG, or to Brave when only a Brave key is set.
        """
        searxng = secret("SEARXNG_URL")
        brave = secret("BRAVE_SEARCH_API_KEY")
        provider = settings.search_provider or ("brave" if brave and not searxng else "searxng")
        return cls(
            provider=provider,
            searxng_url=dg.EnvVar("SEARXNG_URL") if searxng else "",
            brave_api_key=dg.EnvVar("BRAVE_SEARCH_API_KEY") if brave else "",
            brave_base_url=settings.brave_search_base_url,
            timeout_s=settings.search_timeout_s,
            max_retries=settings.search_max_retries,
            queries_per_second=settings.search_qps,
            max_concurrency=settings.search_max_concurrency,
            cache_ttl_days=settings.search_cache_ttl_days,
            results_per_query=settings.search_results,
        )
