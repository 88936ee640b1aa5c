"""The AI stage: a model chooses among each unmatched item's top-k candidates, or none.

The enhanced stage saved every unmatched item's candidates; this stage shows the model the first
``top_k`` of them that score within ``score_band`` of the best, and accepts only an answer that
names one of them (see ``core/llm.py``).

It also gives the second opinion the enhanced stage asks for on its doubtful fuzzy accepts
(``evidence["verify"]``): with a model configured, such an item comes here with the accepted
entry and its nearest rivals as candidates, asked the same select-or-none question as any other
item (the model is not told which entry was accepted, so it cannot simply agree). The same entry
confirms the accept, ``none`` overturns it (the item flows on to web search) and a rival replaces
it. A second opinion that fails (invalid replies) leaves the accept standing, with the error, so
that retrying asks again. Without a model these accepts stay as they are and wait for review.

All of a block's requests run concurrently on one event loop, within the client's concurrency,
requests- and tokens-per-minute limits. Answers are cached by (model, prompt version, item,
candidates), so re-materialising a chunk pays nothing; an invalid reply is asked once more, then
recorded as the item's error, never guessed. Without a configured model the stage skips its items with a note.
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
    shown_candidates,
)
from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.defs.stages import SKIPPED, STAGE_SPECS, stage_asset, wants_verify
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase

CACHE_NAMESPACE = "ai"
METHOD = "llm"
SKIPPED_NOTE = "skipped: no model configured (set OPENAI_API_KEY or OPENAI_BASE_URL)"
ATTEMPTS_PER_QUESTION = 2
"""An invalid reply (malformed, cut off, refused, unknown id) is asked once more, then recorded."""
SECOND_OPINION = "second_opinion"
"""Evidence key of the AI decision on an accept sent for verification: one of the outcomes below."""
CONFIRMED, REJECTED, FAILED = "confirmed", "rejected", "failed"


@dataclass(frozen=True)
class RequestRecord:
    """What one request cost. It is filed under the first item it asked about, so it counts in
    that item's chunk only: a request may ask about items of neighbouring chunks, and the sum of
    the chunks' figures must count every request once."""

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
        self.skip_note: str | None = None if session is not None else SKIPPED_NOTE
        """Why the stage only passes items on (:class:`~matching_pipeline.defs.stages.MaySkip`)."""

    @property
    def verifies_accepts(self) -> bool:
        """Accepts flagged for a second opinion come here only when a model can give it
        (:class:`~matching_pipeline.defs.stages.VerifiesAccepts`)."""
        return self.session is not None

    def _shown(self, decision: Decision | None) -> list[Candidate]:
        """The candidates to show for an item whose current decision is ``decision``.

        An accept under verification keeps all its saved candidates (the accepted entry and its
        nearest rivals, at most ``top_k``): the score band would leave the accepted entry alone
        (a fuzzy accept leads its runner-up by the margin), and choosing among look-alikes is
        exactly what the model is asked to do better than the score did.
        """
        if decision is None:
            return []
        if wants_verify(decision):
            return decision.candidates[: self.openai.top_k]
        return shown_candidates(decision.candidates, self.openai.top_k, self.openai.score_band)

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        rows = pending.to_dict("records")
        questions = [make_question(row["item_id"], row, self._shown(earlier.get(row["item_id"]))) for row in rows]
        accepted = {q.item_id: earlier[q.item_id] for q in questions if q.item_id in earlier and wants_verify(earlier[q.item_id])}
        if self.session is None:
            return [
                Decision(q.item_id, None, SKIPPED, 0.0, {"skipped": "no model configured"}, list(q.candidates))
                for q in questions
            ]
        model = self.openai.model
        keys = {q.item_id: cache_key(model, q) for q in questions}
        hits = {} if self.openai.refresh_cache else self.db.cache_get(CACHE_NAMESPACE, list(keys.values()))
        cached = {q.item_id: Answer.from_cache(hits[keys[q.item_id]]["value"]) for q in questions if keys[q.item_id] in hits}
        to_ask = [q for q in questions if q.candidates and q.item_id not in cached]
        # "chunk": a chunk's worth of items per request, packed in arrival order across the
        # block's chunks. The enhanced stage leaves a chunk about a third of its items, and a
        # request per chunk paid the instructions and the schema for those three or four alone.
        size = CHUNK_SIZE if self.openai.items_per_request == "chunk" else 1
        groups = [to_ask[i : i + size] for i in range(0, len(to_ask), size)]
        try:
            asked = self.session.run(self._ask_all(groups, keys)) if groups else {}
        except ChatAPIError as exc:  # quota, rejected request, retries exhausted: fail with the reason
            raise dg.Failure(description=str(exc)) from exc
        decisions = [self._decision(q, cached.get(q.item_id) or asked.get(q.item_id), q.item_id in cached) for q in questions]
        return [self._second_opinion(d, accepted[d.item_id]) if d.item_id in accepted else d for d in decisions]

    def _decision(self, question: Question, outcome: Answer | ReplyError | None, from_cache: bool) -> Decision:
        candidates = list(question.candidates)
        if outcome is None:  # nothing to choose from: no request was made
            return Decision(question.item_id, None, "none", 0.0, {"reason": "no candidates to choose from"}, candidates)
        evidence: dict[str, Any] = {"model": self.openai.model, "prompt_version": PROMPT_VERSION}
        if isinstance(outcome, ReplyError):
            return Decision(question.item_id, None, METHOD, 0.0, evidence, candidates, error=str(outcome))
        evidence.update(choice=outcome.choice, reason=outcome.reason, cached=from_cache)
        return Decision(question.item_id, outcome.catalog_id, METHOD, outcome.confidence, evidence, candidates)

    @staticmethod
    def _second_opinion(decision: Decision, accept: Decision) -> Decision:
        """The model's decision on a flagged accept, marked as confirming or overturning it.

        A model answer stands either way (same entry: confirmed; ``none`` or a rival: rejected).
        Without an answer (invalid replies, or no candidates to show) nothing contradicts the
        accept, so it stands as the enhanced stage made it, with the error kept for a retry.
        """
        outcome = CONFIRMED if decision.catalog_id == accept.catalog_id else REJECTED
        if decision.method != METHOD or decision.error is not None:
            outcome = FAILED
        evidence = {
            **decision.evidence,
            SECOND_OPINION: outcome,
            "accepted": {"catalog_id": accept.catalog_id, "method": accept.method, "confidence": accept.confidence},
        }
        if outcome == FAILED:
            candidates = decision.candidates or accept.candidates
            return Decision(decision.item_id, accept.catalog_id, accept.method, accept.confidence, evidence, candidates, decision.error)
        return Decision(decision.item_id, decision.catalog_id, decision.method, decision.confidence, evidence, decision.candidates)

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
            self._requests.setdefault(remaining[0].item_id, []).append(record)
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
        records = [r for d in decisions for r in self._requests.pop(d.item_id, [])]
        prompt = sum(r.prompt_tokens for r in records)
        completion = sum(r.completion_tokens for r in records)
        latencies = sorted(r.latency_s for r in records)
        metadata: dict[str, Any] = {
            "requests": len(records),
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "estimated_cost_usd": round(self.openai.cost_usd(prompt, completion), 6),
            "cache_hits": sum(bool(d.evidence.get("cached")) for d in decisions),
            "verified": sum(SECOND_OPINION in d.evidence for d in decisions),
            "verify_confirmed": sum(d.evidence.get(SECOND_OPINION) == CONFIRMED for d in decisions),
            "verify_rejected": sum(d.evidence.get(SECOND_OPINION) == REJECTED for d in decisions),
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
