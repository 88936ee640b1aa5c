"""The AI stage: a model chooses among each unmatched item's top-k candidates, or none.

The enhanced stage saved every unmatched item's candidates; this stage shows the model the first
``top_k`` of them and accepts only an answer that names one of them (see ``core/llm.py``). All of
a block's requests run concurrently on one event loop, within the client's concurrency, requests-
and tokens-per-minute limits. Answers are cached by (model, prompt version, item, candidates), so
re-materialising a chunk pays nothing; an invalid reply is asked once more, then recorded as the
item's error, never guessed. Without a configured model the stage skips its items with a note.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from matching_pipeline.clients.openai_chat import ChatAPIError, ChatSession, OpenAIChatClient
from matching_pipeline.core.llm import (
    PROMPT_VERSION,
    Answer,
    Question,
    ReplyError,
    build_messages,
    cache_key,
    make_question,
    max_completion_tokens,
    parse_reply,
    response_format,
)
from matching_pipeline.core.models import Decision
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.defs.stages import STAGE_SPECS, stage_asset
from matching_pipeline.store import ResultsDatabase

CACHE_NAMESPACE = "ai"
METHOD = "llm"
SKIPPED_NOTE = "skipped: no model configured (set OPENAI_API_KEY or OPENAI_BASE_URL)"
ATTEMPTS_PER_QUESTION = 2
"""An invalid reply (malformed, cut off, refused, unknown id) is asked once more, then recorded."""


@dataclass(frozen=True, eq=False)
class RequestRecord:
    """What one request cost; shared by the items it asked about (identity, not equality)."""

    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class AIStage:
    """The AI stage's :class:`~matching_pipeline.defs.stages.StageLogic`."""

    def __init__(
        self, openai: OpenAIResource, session: ChatSession | None, db: ResultsDatabase, catalog_version: str | None
    ):
        if openai.configured and session is None:
            raise ValueError("a configured model needs a chat session")
        self.openai = openai
        self.session = session
        self.db = db
        self.catalog_version: str | None = catalog_version
        self._requests: dict[str, list[RequestRecord]] = {}

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        rows = pending.to_dict("records")
        questions = [
            make_question(
                row["item_id"],
                row,
                earlier[row["item_id"]].candidates[: self.openai.top_k] if row["item_id"] in earlier else [],
            )
            for row in rows
        ]
        if self.session is None:
            return [
                Decision(q.item_id, None, "skipped", 0.0, {"skipped": "no model configured"}, list(q.candidates))
                for q in questions
            ]
        model = self.openai.model
        keys = {q.item_id: cache_key(model, q) for q in questions}
        hits = {} if self.openai.refresh_cache else self.db.cache_get(CACHE_NAMESPACE, list(keys.values()))
        cached = {q.item_id: Answer.from_cache(hits[keys[q.item_id]]["value"]) for q in questions if keys[q.item_id] in hits}
        to_ask = [q for q in questions if q.candidates and q.item_id not in cached]
        if self.openai.items_per_request == "chunk":
            chunk_of = {row["item_id"]: row["chunk_key"] for row in rows}
            by_chunk: dict[str, list[Question]] = {}
            for question in to_ask:
                by_chunk.setdefault(chunk_of[question.item_id], []).append(question)
            groups = list(by_chunk.values())
        else:
            groups = [[q] for q in to_ask]
        try:
            asked = self.session.run(self._ask_all(groups, keys)) if groups else {}
        except ChatAPIError as exc:  # quota, rejected request, retries exhausted: fail with the reason
            raise dg.Failure(description=str(exc)) from exc
        return [self._decision(q, cached.get(q.item_id) or asked.get(q.item_id), q.item_id in cached) for q in questions]

    def _decision(self, question: Question, outcome: Answer | ReplyError | None, from_cache: bool) -> Decision:
        candidates = list(question.candidates)
        if outcome is None:  # nothing to choose from: no request was made
            return Decision(question.item_id, None, "none", 0.0, {"reason": "no candidates to choose from"}, candidates)
        evidence: dict[str, Any] = {"model": self.openai.model, "prompt_version": PROMPT_VERSION}
        if isinstance(outcome, ReplyError):
            return Decision(question.item_id, None, METHOD, 0.0, evidence, candidates, error=str(outcome))
        evidence.update(choice=outcome.choice, reason=outcome.reason, cached=from_cache)
        return Decision(question.item_id, outcome.catalog_id, METHOD, outcome.confidence, evidence, candidates)

    async def _ask_all(self, groups: Sequence[Sequence[Question]], keys: Mapping[str, str]) -> dict[str, Answer | ReplyError]:
        """Every group's request at once; the client holds them to its limits. A client error
        (quota, retries exhausted) fails the block: answers received so far are already cached."""
        assert self.session is not None
        chat = self.session.client
        results = await asyncio.gather(*(self._ask(chat, group, keys) for group in groups))
        return {item_id: outcome for part in results for item_id, outcome in part.items()}

    async def _ask(
        self, chat: OpenAIChatClient, questions: Sequence[Question], keys: Mapping[str, str]
    ) -> dict[str, Answer | ReplyError]:
        outcomes: dict[str, Answer | ReplyError] = {}
        remaining = list(questions)
        for _ in range(ATTEMPTS_PER_QUESTION):
            fmt = response_format(remaining)
            reply = await chat.complete(build_messages(remaining), response_format=fmt, max_tokens=max_completion_tokens(remaining))
            record = RequestRecord(reply.prompt_tokens, reply.completion_tokens, reply.latency_s)
            for question in remaining:
                self._requests.setdefault(question.item_id, []).append(record)
            parsed = parse_reply(remaining, reply.content, finish_reason=reply.finish_reason, refusal=reply.refusal)
            outcomes.update(parsed)
            answers = {keys[item_id]: a.to_cache() for item_id, a in parsed.items() if isinstance(a, Answer)}
            if answers:
                await asyncio.to_thread(self._remember, answers)
            remaining = [q for q in remaining if isinstance(parsed[q.item_id], ReplyError)]
            if not remaining:
                break
        return outcomes

    def _remember(self, answers: Mapping[str, dict[str, Any]]) -> None:
        for key, value in answers.items():
            self.db.cache_put(CACHE_NAMESPACE, key, value)

    def chunk_metadata(self, decisions: Sequence[Decision]) -> dict[str, Any]:
        records = list({id(r): r for d in decisions for r in self._requests.pop(d.item_id, [])}.values())
        prompt = sum(r.prompt_tokens for r in records)
        completion = sum(r.completion_tokens for r in records)
        latencies = sorted(r.latency_s for r in records)
        metadata: dict[str, Any] = {
            "requests": len(records),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "estimated_cost_usd": round(self.openai.cost_usd(prompt, completion), 6),
            "cache_hits": sum(bool(d.evidence.get("cached")) for d in decisions),
            "latency_p50_s": _percentile(latencies, 0.50),
            "latency_p95_s": _percentile(latencies, 0.95),
            "model": self.openai.model if self.session else "",
        }
        if self.session is None:
            metadata["note"] = SKIPPED_NOTE
        return metadata


def _percentile(ordered: Sequence[float], share: float) -> float:
    """Nearest-rank percentile of sorted values; 0 when there are none."""
    return round(ordered[max(0, math.ceil(share * len(ordered)) - 1)], 4) if ordered else 0.0


def _make_logic(context: dg.AssetExecutionContext) -> AIStage:
    openai: OpenAIResource = context.resources.openai
    if not openai.configured:
        context.log.warning(f"AI stage {SKIPPED_NOTE}")
    return AIStage(openai, openai.session, context.resources.results.get(), context.resources.catalog_source.version())


ai_matches = stage_asset(
    STAGE_SPECS["ai"],
    deps=["enhanced_matches"],
    description=(
        "Stage 2: a language model picks, for each item the enhanced stage left unmatched, one of its "
        "top-k candidates or none, under a JSON schema that only admits those candidates. Answers are "
        "cached by model, prompt version, item and candidates; pool 'openai' runs one such step at a time."
    ),
    resource_keys={"openai", "catalog_source"},
    make_logic=_make_logic,
)
