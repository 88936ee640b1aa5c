"""The OpenAI-compatible model API as a Dagster resource: OpenAI itself, or vLLM, Ollama, any
server speaking chat completions.

Secrets reach it only through ``dagster.EnvVar`` (see :meth:`OpenAIResource.from_settings`), so
the key never lands in run config, the UI, logs or metadata. Every other setting is a field
``ai_*`` of :class:`~matching_pipeline.settings.Settings` (``MATCHING_AI_*``, listed in
``docs/ai_stage.md``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import dagster as dg
from pydantic import PrivateAttr

from matching_pipeline.clients.openai_chat import ChatSession, ChatSettings
from matching_pipeline.core.llm import DEFAULT_SCORE_BAND
from matching_pipeline.settings import Settings, current_settings, secret

DEFAULT_MODEL = "gpt-4o-mini"


class OpenAIResource(dg.ConfigurableResource):
    """Where the model is, how hard to push it, and what it costs.

    Unconfigured (no key and no base URL) is a valid state: the AI stage then skips its items
    with a note instead of failing the cascade or inventing answers.
    """

    api_key: str = ""
    base_url: str = ""
    model: str = DEFAULT_MODEL
    timeout_s: float = 60.0
    max_retries: int = 5
    max_concurrency: int = 16
    requests_per_minute: float = 500.0
    tokens_per_minute: float = 200_000.0
    items_per_request: Literal["item", "chunk"] = "chunk"
    """``chunk``: a chunk's worth (ten) of items per request, packed across the chunks of a block,
    so the instructions and the schema are paid once per ten items; ``item``: one request per
    item. See docs/ai_stage.md."""
    top_k: int = 10
    score_band: float = DEFAULT_SCORE_BAND
    """Show only candidates scoring at most this far below the item's best (of at most
    ``top_k``): the rest cost tokens on entries retrieval already judged far off. 1 or more
    shows all ``top_k``. See ``DEFAULT_SCORE_BAND`` in core/llm.py for how 0.4 was chosen."""
    price_input_per_1m: float = 0.15
    """USD per million prompt tokens (gpt-4o-mini list price); 0 for a local server."""
    price_output_per_1m: float = 0.60
    refresh_cache: bool = False
    """Ask the model again even when a cached answer exists; the new answer replaces it."""

    _session: ChatSession | None = PrivateAttr(default=None)

    @property
    def configured(self) -> bool:
        return bool(self.api_key or self.base_url)

    @property
    def session(self) -> ChatSession | None:
        """The step's chat session; None when no model is configured."""
        return self._session

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[OpenAIResource]:
        """Open one chat session for the whole step (see :class:`ChatSession` for why), and log
        what it took: attempts, 429s and retries are the signs of limits set too high."""
        if not self.configured:
            yield self
            return
        with ChatSession(self.chat_settings()) as session:
            self._session = session
            try:
                yield self
            finally:
                self._session = None
                stats = session.client.stats
                if context.log is not None and stats.attempts:
                    context.log.info(
                        f"model API: {stats.attempts} requests sent, {stats.rate_limited} answered 429, "
                        f"{stats.retries} retried"
                    )

    def chat_settings(self) -> ChatSettings:
        return ChatSettings(
            model=self.model,
            base_url=self.base_url or None,
            api_key=self.api_key or None,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
        )

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_1m + completion_tokens * self.price_output_per_1m) / 1e6

    @classmethod
    def from_env(cls) -> OpenAIResource:
        """The resource as the environment describes it (unset variables keep the defaults)."""
        return cls.from_settings(current_settings())

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIResource:
        """The resource from ``settings``; the key and the base URL (``OPENAI_API_KEY``,
        ``OPENAI_BASE_URL``) as ``dagster.EnvVar`` and only when set."""
        return cls(
            api_key=dg.EnvVar("OPENAI_API_KEY") if secret("OPENAI_API_KEY") else "",
            base_url=dg.EnvVar("OPENAI_BASE_URL") if secret("OPENAI_BASE_URL") else "",
            model=settings.ai_model,
            timeout_s=settings.ai_timeout_s,
            max_retries=settings.ai_max_retries,
            max_concurrency=settings.ai_max_concurrency,
            requests_per_minute=settings.ai_requests_per_minute,
            tokens_per_minute=settings.ai_tokens_per_minute,
            items_per_request=settings.ai_items_per_request,
            top_k=settings.ai_top_k,
            score_band=settings.ai_score_band,
            price_input_per_1m=settings.ai_price_input_per_1m,
            price_output_per_1m=settings.ai_price_output_per_1m,
            refresh_cache=settings.ai_refresh_cache,
        )
