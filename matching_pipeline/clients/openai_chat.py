"""An async chat-completions client over ``openai.AsyncOpenAI`` that paces itself and retries.

Retries are ours (tenacity), with the SDK's own retries off (``max_retries=0``), because the
SDK retries every 429 alike: a 429 whose code is ``insufficient_quota`` (no credit left) would
be retried for nothing, and a run would stall instead of failing with a clear message. Our loop
also goes back through the pacing for every attempt, counts each 429, and lets one 429's
``Retry-After`` pause *every* request of the client, not only the one that received it.

What the client guarantees:

* at most ``max_concurrency`` requests in flight (a semaphore);
* requests per minute and tokens per minute paced with ``aiolimiter`` leaky buckets; a request's
  tokens are estimated before sending (characters / 4 plus the completion budget);
* 429: wait the server's ``Retry-After`` (``retry-after-ms`` or ``retry-after``), up to
  :data:`MAX_RETRY_AFTER_S`; 5xx, 408, 409, timeouts and connection errors: exponential backoff
  with jitter; at most ``max_retries`` retries, then :class:`ChatAPIError`;
* ``insufficient_quota``: :class:`QuotaExhausted` at once;
* every reply carries its latency, attempts and token usage.

Pacing holds per client. A :class:`ChatSession` keeps one client and its event loop for a whole
Dagster step, so each block of items starts where the last left the limits (no fresh burst), and
the Dagster pool ``openai`` (limit 1) lets one such step run at a time: the limits hold for the
whole deployment.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

PLACEHOLDER_API_KEY = "no-key"
"""Sent to local servers (vLLM, Ollama) that need no key; the SDK refuses to start without one."""
MAX_RETRY_AFTER_S = 120.0
"""A longer ``Retry-After`` is not waited for (the SDK draws the same line): the step fails."""
REQUEST_BURST_S = 0.5
"""The requests bucket holds half a second of requests (at least one). Enough to refill the pipe
after a block's last answers; small enough to leave the provider's own burst allowance (a second
or more) as headroom for network jitter, so that pacing right at the limit earns no 429s. With a
full second here, a burst that reached the server a few ms late left it with no tokens when the
next paced request arrived: 2.4% of requests got a 429 in the benchmark."""
TOKEN_BURST_S = 10.0
"""The tokens bucket holds this many seconds of the per-minute budget."""
RETRYABLE_STATUS = frozenset({408, 409, 429})
T = TypeVar("T")


class ChatAPIError(RuntimeError):
    """The chat API failed in a way that more retries in this step would not fix."""


class QuotaExhausted(ChatAPIError):
    """The account has no quota left (429 ``insufficient_quota``): retrying cannot help."""


@dataclass(frozen=True)
class ChatSettings:
    """Where the model is and how hard the client may push it."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    max_retries: int = 5
    max_concurrency: int = 16
    requests_per_minute: float = 500.0
    tokens_per_minute: float = 200_000.0
    backoff_s: float = 0.5
    """First backoff after a 5xx or timeout; it doubles per retry, plus up to as much jitter."""
    backoff_max_s: float = 20.0


@dataclass(frozen=True)
class ChatReply:
    """The first choice of a completion, with what it cost."""

    content: str | None
    refusal: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    """Seconds of the attempt that succeeded, from sending to the parsed response."""
    attempts: int


@dataclass
class ChatStats:
    """Counters over the client's life, logged at the end of a step."""

    attempts: int = 0
    rate_limited: int = 0
    retries: int = 0


def estimate_tokens(messages: Sequence[Mapping[str, str]], response_format: Mapping[str, Any], max_tokens: int) -> int:
    """Tokens a request may consume, before sending it: about four characters per token of
    prompt and schema, plus the whole completion budget (which providers count against TPM)."""
    chars = sum(len(m["content"]) for m in messages) + len(json.dumps(response_format))
    return math.ceil(chars / 4) + max_tokens


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    if response is None:
        return None
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                return max(0.0, float(value) / divisor)
            except ValueError:
                continue  # an HTTP date: rare from model APIs; fall back to backoff
    return None


# ``openai`` is imported where a client is made or its errors are read, not at module level: the
# SDK takes about 0.7 s to import, and every process that loads the code location (webserver,
# daemon, each run) would pay it even when no model is configured.


def _is_quota(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.RateLimitError) and "insufficient_quota" in (exc.code, exc.type)


def _transient(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError) and not _is_quota(exc):
        after = _retry_after(exc)
        if after is not None and after > MAX_RETRY_AFTER_S:
            return False
        return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500
    return False


class OpenAIChatClient:
    """Chat completions within limits. Use it from one event loop (the HTTP pool and the limiters
    bind to the first loop that uses them) and :meth:`aclose` it there."""

    def __init__(self, settings: ChatSettings):
        if not settings.api_key and not settings.base_url:
            raise ValueError("an API key or a base URL is required")
        import openai

        self.settings = settings
        self.stats = ChatStats()
        self._sdk = openai.AsyncOpenAI(
            api_key=settings.api_key or PLACEHOLDER_API_KEY,
            base_url=settings.base_url or None,
            timeout=settings.timeout_s,
            max_retries=0,
        )
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        burst = max(1.0, settings.requests_per_minute * REQUEST_BURST_S / 60.0)
        self._requests = AsyncLimiter(burst, burst * 60.0 / settings.requests_per_minute)
        self._tokens = AsyncLimiter(settings.tokens_per_minute * TOKEN_BURST_S / 60.0, TOKEN_BURST_S)
        self._backoff = wait_exponential(multiplier=settings.backoff_s, max=settings.backoff_max_s) + wait_random(
            0, settings.backoff_s
        )
        self._resume_at = 0.0

    async def aclose(self) -> None:
        await self._sdk.close()

    async def complete(
        self, messages: Sequence[Mapping[str, str]], *, response_format: Mapping[str, Any], max_tokens: int
    ) -> ChatReply:
        """One chat completion, paced and retried; raises :class:`ChatAPIError` when it gives up."""
        import openai

        tokens = min(estimate_tokens(messages, response_format, max_tokens), self._tokens.max_rate)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(_transient),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(messages, response_format, max_tokens, tokens, attempt.retry_state.attempt_number)
        except QuotaExhausted:
            raise
        except openai.APIError as exc:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise ChatAPIError(
                f"chat completion with model {self.settings.model!r} failed after {attempts} attempt(s): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _attempt(
        self,
        messages: Sequence[Mapping[str, str]],
        response_format: Mapping[str, Any],
        max_tokens: int,
        tokens: float,
        attempt_number: int,
    ) -> ChatReply:
        import openai

        loop = asyncio.get_running_loop()
        async with self._slots:
            while (pause := self._resume_at - loop.time()) > 0:
                await asyncio.sleep(pause)
            await self._requests.acquire()
            await self._tokens.acquire(tokens)
            self.stats.attempts += 1
            began = loop.time()
            try:
                # Messages and the response format are plain mappings (built in core/llm.py without
                # the SDK); the SDK's TypedDict overloads accept them at run time, not statically.
                completion = await self._sdk.chat.completions.create(  # type: ignore[call-overload]
                    model=self.settings.model,
                    messages=list(messages),
                    response_format=response_format,
                    max_completion_tokens=max_tokens,
                    temperature=0,
                )
            except openai.RateLimitError as exc:
                self.stats.rate_limited += 1
                if _is_quota(exc):
                    raise QuotaExhausted(
                        f"the model API account has no quota left (429 insufficient_quota): {exc.message.rstrip('.')}. "
                        "Add credit or raise the limit with the provider, then re-run: finished chunks and "
                        "cached answers are kept."
                    ) from exc
                after = _retry_after(exc)
                if after is not None:
                    self._resume_at = max(self._resume_at, loop.time() + after)
                raise
            latency = loop.time() - began
        choice = completion.choices[0] if completion.choices else None
        message = choice.message if choice else None
        usage = completion.usage
        return ChatReply(
            content=message.content if message else None,
            refusal=getattr(message, "refusal", None),
            finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_s=latency,
            attempts=attempt_number,
        )

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = _retry_after(exc) if exc is not None else None
        if after is not None:
            return after + random.uniform(0, 0.1 * after)  # honour it; jitter so waiters do not stampede
        return self._backoff(state)

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1


class ChatSession:
    """A client and the one event loop it runs on, for synchronous callers (a Dagster step).

    Living as long as the step, it carries pacing, keep-alive connections and any Retry-After
    pause from one block of items to the next; a loop per block would start every block with a
    fresh burst on top of the previous block's last second.
    """

    def __init__(self, settings: ChatSettings):
        self._runner = asyncio.Runner()
        self.client = OpenAIChatClient(settings)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coroutine)

    def close(self) -> None:
        try:
            self._runner.run(self.client.aclose())
        finally:
            self._runner.close()  # also cancels requests still in flight after a failure

    def __enter__(self) -> ChatSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
