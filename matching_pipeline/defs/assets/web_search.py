"""The web-search stage: a search engine finds identifiers for what the earlier stages left.

For each pending item it runs the item's queries (most specific first, stopping at the first
decisive one), reads identifiers from the results and lets the pure rule in
:mod:`matching_pipeline.core.web_evidence` accept a match only when a result states the item's
own code and the entry agrees with everything the item says. When several entries remain, or
only the item's words relate the results to it, and a model is configured (the AI stage's
``openai`` resource and client), the model picks one of *those* entries or none from the
snippets; without a model the item stays unmatched with the reasons in its evidence. Every answered query and every model answer
is cached in the results database, so re-materialising a chunk pays for nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from matching_pipeline.clients.openai_chat import ChatAPIError, ChatSession, OpenAIChatClient
from matching_pipeline.clients.search import (
    SearchClient,
    SearchConfigurationError,
    SearchResponseError,
    SearchResult,
    SearchTransientError,
)
from matching_pipeline.core.catalog import CatalogIndex
from matching_pipeline.core.llm import (
    Answer,
    ReplyError,
    build_messages,
    cache_key,
    max_completion_tokens,
    parse_reply,
    response_format,
)
from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.core.web_evidence import (
    ItemProfile,
    WebEvidenceSettings,
    WebVerdict,
    assess,
    build_queries,
    confirm,
    confirmation_question,
)
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.defs.search_resource import NOT_CONFIGURED_NOTE, SearchResource
from matching_pipeline.defs.stages import SKIPPED, STAGE_SPECS, stage_asset
from matching_pipeline.results.store import ResultsDatabase

MAX_CANDIDATES = 10
CONFIRM_NAMESPACE = "web_confirm"


class SearchCache:
    """Search responses in the results database, by provider and query, until they expire.

    The key also holds the number of results asked for, so raising ``results_per_query`` asks
    again instead of serving a shorter list.
    """

    def __init__(self, db: ResultsDatabase, provider: str, results_per_query: int, ttl: timedelta):
        self.db = db
        self.namespace = f"search:{provider}"
        self.results_per_query = results_per_query
        self.ttl = ttl

    def key(self, query: str) -> str:
        return hashlib.sha256(f"{self.results_per_query}\n{query}".encode()).hexdigest()

    def fresh(self, queries: Sequence[str]) -> dict[str, list[SearchResult]]:
        """Cached results of those ``queries`` younger than the expiry, by query."""
        keys = {self.key(q): q for q in dict.fromkeys(queries)}
        oldest = datetime.now(UTC) - self.ttl
        return {
            keys[key]: [SearchResult.from_dict(r) for r in row["value"]["results"]]
            for key, row in self.db.cache_get(self.namespace, list(keys)).items()
            if row["created_at"] >= oldest
        }

    def put(self, query: str, results: Sequence[SearchResult]) -> None:
        self.db.cache_put(self.namespace, self.key(query), {"query": query, "results": [r.to_dict() for r in results]})


class _BlockQueries:
    """Answers to one block's queries: the cache first, else one request per distinct query,
    shared by every item that asks it."""

    def __init__(self, client: SearchClient, cache: SearchCache, cached: dict[str, list[SearchResult]], count: int):
        self.client = client
        self.cache = cache
        self.cached = cached
        self.count = count
        self.inflight: dict[str, asyncio.Task[list[SearchResult]]] = {}
        self.records: dict[str, dict[str, Any]] = {}

    async def answer(self, query: str) -> tuple[list[SearchResult], dict[str, Any]]:
        """Results for ``query`` and the record kept in the item's evidence.

        ``source`` is ``cache``, ``live`` (this item's request) or ``shared`` (another item of the
        block asked the same query). A transient or response error fails only this query.
        """
        if query in self.cached:
            results = self.cached[query]
            return results, {"query": query, "source": "cache", "results": len(results)}
        owner = query not in self.inflight
        if owner:
            self.inflight[query] = asyncio.ensure_future(self._fetch(query))
        record: dict[str, Any] = {"query": query, "source": "live" if owner else "shared"}
        try:
            results = await self.inflight[query]
        except (SearchTransientError, SearchResponseError) as exc:
            return [], {**record, "error": str(exc)}
        if owner:
            record.update(self.records[query])
        return results, {**record, "results": len(results)}

    async def _fetch(self, query: str) -> list[SearchResult]:
        outcome = await self.client.search(query, self.count)
        self.records[query] = {"latency_ms": round(outcome.latency_s * 1000, 1), "attempts": outcome.attempts}
        await asyncio.to_thread(self.cache.put, query, outcome.results)
        return outcome.results


class WebSearchStage:
    """The stage as the per-chunk loop sees it (see ``StageLogic``)."""

    def __init__(
        self,
        search: SearchResource,
        db: ResultsDatabase,
        index: CatalogIndex | None,
        settings: WebEvidenceSettings | None = None,
        openai: OpenAIResource | None = None,
        session: ChatSession | None = None,
    ):
        if (openai is None) != (session is None):
            raise ValueError("model confirmation needs both the OpenAI resource and its chat session")
        self.search = search
        self.db = db
        self.openai = openai
        self.session = session
        self.index = index
        self.settings = settings or WebEvidenceSettings()
        self.catalog_version: str | None = index.version if index else None
        self.cache = SearchCache(db, search.provider, search.results_per_query, timedelta(days=search.cache_ttl_days))
        self._label = search.describe() if search.configured else ""
        self._pace = search.new_pace() if search.configured else None
        self.skip_note: str | None = None if search.configured else NOT_CONFIGURED_NOTE
        """Why the stage only passes items on (:class:`~matching_pipeline.defs.stages.MaySkip`)."""

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        rows = pending.to_dict("records")
        if not self.search.configured:
            return [_skipped(str(row["item_id"]), earlier.get(str(row["item_id"]))) for row in rows]
        block = self._decide_block(rows, earlier)
        try:
            # With a model, run on the chat session's step-long loop, where its client lives.
            return self.session.run(block) if self.session else asyncio.run(block)
        except* SearchConfigurationError as group:
            raise dg.Failure(str(group.exceptions[0])) from None

    async def _decide_block(self, rows: list[dict[str, Any]], earlier: Mapping[str, Decision]) -> list[Decision]:
        assert self._pace is not None
        plans = [build_queries(row, self.settings) for row in rows]
        cached = await asyncio.to_thread(self.cache.fresh, [q for plan in plans for q in plan])
        chat = self.session.client if self.session else None
        async with self.search.new_http() as http:
            queries = _BlockQueries(self.search.new_client(http, self._pace), self.cache, cached, self.search.results_per_query)
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._decide_item(queries, chat, row, plan, earlier.get(str(row["item_id"]))))
                    for row, plan in zip(rows, plans, strict=True)
                ]
        return [task.result() for task in tasks]

    async def _decide_item(
        self,
        queries: _BlockQueries,
        chat: OpenAIChatClient | None,
        row: dict[str, Any],
        plan: list[str],
        prior: Decision | None,
    ) -> Decision:
        assert self.index is not None
        item_id = str(row["item_id"])
        profile = ItemProfile.of(row)
        prior_candidates = prior.candidates if prior else []
        earlier_ids = {c.catalog_id for c in prior_candidates}
        results: dict[str, SearchResult] = {}
        records: list[dict[str, Any]] = []
        verdict = WebVerdict("no_evidence")
        for query in plan:
            found, record = await queries.answer(query)
            records.append(record)
            for result in found:
                results.setdefault(result.url, result)
            verdict = assess(profile, list(results.values()), self.index, earlier_ids, self.settings)
            if verdict.decisive:
                break
        errors = [r["error"] for r in records if "error" in r]
        if verdict.needs_model and chat is not None:
            verdict, failure = await self._confirm(chat, row, verdict)
            errors += [failure] if failure else []
        evidence = {"outcome": verdict.outcome, **verdict.evidence, "results_read": len(results), "queries": records}
        candidates = _merge(verdict.supported, prior_candidates)
        if verdict.catalog_id is not None:
            return Decision(item_id, verdict.catalog_id, "web", verdict.confidence, evidence, candidates)
        return Decision(item_id, None, "none", 0.0, evidence, candidates, error="; ".join(errors) or None)

    async def _confirm(self, chat: OpenAIChatClient, row: dict[str, Any], verdict: WebVerdict) -> tuple[WebVerdict, str | None]:
        """Let the model pick among the supported entries (cached by model, prompt and question)."""
        assert self.openai is not None
        question = confirmation_question(str(row["item_id"]), row, verdict, self.settings)
        key = cache_key(self.openai.model, question)
        hit = await asyncio.to_thread(self.db.cache_get, CONFIRM_NAMESPACE, [key])
        if key in hit:
            answer = Answer.from_cache(hit[key]["value"])
        else:
            try:
                reply = await chat.complete(
                    build_messages([question]),
                    response_format=response_format([question]),
                    max_tokens=max_completion_tokens([question]),
                )
            except ChatAPIError as exc:
                return verdict, f"model confirmation failed: {exc}"
            parsed = parse_reply([question], reply.content, finish_reason=reply.finish_reason, refusal=reply.refusal)
            answer_or_error = parsed[question.item_id]
            if isinstance(answer_or_error, ReplyError):
                return verdict, f"model confirmation failed: {answer_or_error}"
            answer = answer_or_error
            await asyncio.to_thread(self.db.cache_put, CONFIRM_NAMESPACE, key, answer.to_cache())
        return confirm(verdict, answer), None

    def chunk_metadata(self, decisions: Sequence[Decision]) -> dict[str, Any]:
        if not self.search.configured:
            return {"note": NOT_CONFIGURED_NOTE}
        records = [r for d in decisions for r in d.evidence.get("queries", [])]
        latencies = [r["latency_ms"] for r in records if "latency_ms" in r]
        metadata: dict[str, Any] = {
            "provider": self._label,
            "queries": sum(r["source"] == "live" for r in records),
            "cache_hits": sum(r["source"] == "cache" for r in records),
            "results_read": sum(int(d.evidence.get("results_read", 0)) for d in decisions),
            "query_errors": sum("error" in r for r in records),
            "ambiguous": sum(d.evidence.get("outcome") == "ambiguous" for d in decisions),
            "unconfirmed": sum(d.evidence.get("outcome") == "unconfirmed" for d in decisions),
            "model_confirmations": sum("model" in d.evidence for d in decisions),
        }
        if latencies:
            p50, p95 = np.percentile(latencies, [50, 95])
            metadata.update(latency_p50_ms=round(float(p50), 1), latency_p95_ms=round(float(p95), 1))
        return metadata


def _skipped(item_id: str, prior: Decision | None) -> Decision:
    return Decision(item_id, None, SKIPPED, 0.0, {"note": NOT_CONFIGURED_NOTE}, list(prior.candidates) if prior else [])


def _merge(first: Sequence[Candidate], then: Sequence[Candidate]) -> list[Candidate]:
    """Entries the web supported, then the earlier candidates, each once, at most ten."""
    merged: dict[str, Candidate] = {}
    for candidate in [*first, *then]:
        merged.setdefault(candidate.catalog_id, candidate)
    return list(merged.values())[:MAX_CANDIDATES]


def _make_logic(context: dg.AssetExecutionContext) -> WebSearchStage:
    search: SearchResource = context.resources.search
    db = context.resources.results.get()
    if not search.configured:
        context.log.warning(NOT_CONFIGURED_NOTE)
        return WebSearchStage(search, db, None)
    index, _ = context.resources.catalog_source.load_index()
    openai: OpenAIResource = context.resources.openai
    if openai.session is None:
        return WebSearchStage(search, db, index)
    return WebSearchStage(search, db, index, openai=openai, session=openai.session)


web_search_matches = stage_asset(
    STAGE_SPECS["web_search"],
    deps=["ai_matches"],
    description=(
        "Stage 3: searches the web (SearXNG or Brave Search) for items still unmatched, reads GTINs and "
        "model/part numbers from the results and accepts a catalog entry only when results stating the "
        "item's own code support exactly one entry that agrees with the item (codes, maker, colour, "
        "measures, platform, edition, accessory...) and the catalog corroborates it. "
        "With a model configured, it picks among the entries left when that is not decisive. "
        "Responses are cached by provider and query."
    ),
    resource_keys={"search", "catalog_source", "openai"},
    make_logic=_make_logic,
)
