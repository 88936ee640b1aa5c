"""The AI stage through the real ``openai`` SDK against a local chat-completions server.

Nothing here touches the internet: every request goes to ``tests/servers/openai_server.py`` on
127.0.0.1, which answers like the real API (429 with Retry-After, insufficient_quota, 500,
timeouts, malformed or cut-off replies, refusals, ids outside the candidates).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.cli import _stage_note
from matching_pipeline.clients.openai_chat import ChatAPIError, ChatSession, QuotaExhausted
from matching_pipeline.defs.assets.ai import SKIPPED_NOTE, AIStage
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.jobs.runner import ensure_partitions, run_stage
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import SAMPLE_DIR, Settings
from tests.servers.openai_server import FakeOpenAI, answer_enums, synthetic_workload

pytestmark = pytest.mark.timeout(60)

SAMPLE_ITEMS = pd.read_csv(SAMPLE_DIR / "items.csv", dtype=str, keep_default_na=False)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def db(tmp_path) -> ResultsDatabase:
    database = ResultsDatabase(f"sqlite:///{tmp_path / 'results.db'}")
    yield database
    database.dispose()


@pytest.fixture
def stage(server: FakeOpenAI, db: ResultsDatabase) -> Iterator[Callable[..., AIStage]]:
    """``stage(**resource_config)``: the AI stage logic on the local server, as a step sees it."""
    with ExitStack() as sessions:

        def make(**config: object) -> AIStage:
            openai = OpenAIResource(**{"base_url": server.url, "model": "test-model", **config})
            return AIStage(openai, sessions.enter_context(ChatSession(openai.chat_settings())), db, None)

        yield make


@pytest.mark.parametrize(("shape", "requests"), [("item", 12), ("chunk", 2)])
def test_picks_the_right_candidate_with_a_schema_per_request(server, stage, shape, requests) -> None:
    items, earlier, truth = synthetic_workload(12)
    logic = stage(items_per_request=shape)
    decisions = logic.decide(items, earlier)

    assert [d.catalog_id for d in decisions] == [truth[i] for i in items["item_id"]]
    assert all(d.method == "llm" and d.error is None and d.evidence["reason"] for d in decisions)
    assert server.count == requests and server.received[0].authorization == "Bearer no-key"  # keyless local server
    for body in server.bodies():
        schema = body["response_format"]["json_schema"]
        assert body["response_format"]["type"] == "json_schema" and schema["strict"] is True
        assert body["model"] == "test-model" and body["temperature"] == 0 and body["max_completion_tokens"] > 0
        assert set(map(tuple, answer_enums(body).values())) == {("c1", "c2", "c3", "c4", "c5", "none")}
    sizes = sorted(len(b["response_format"]["json_schema"]["schema"]["required"]) for b in server.bodies())
    assert sizes == ([1] * 12 if shape == "item" else [2, 10])

    first_chunk = [d for d, key in zip(decisions, items["chunk_key"], strict=True) if key.endswith("00001")]
    meta = logic.chunk_metadata(first_chunk)
    assert meta["requests"] == (10 if shape == "item" else 1)
    assert meta["prompt_tokens"] > 0 and meta["completion_tokens"] > 0 and meta["estimated_cost_usd"] > 0
    assert 0 < meta["latency_p50_s"] <= meta["latency_p95_s"] and meta["cache_hits"] == 0 and "note" not in meta


def test_chunk_mode_packs_ten_items_per_request_across_chunks_and_counts_each_request_once(server, stage) -> None:
    items, earlier, truth = synthetic_workload(30)
    left = items.iloc[::3]  # the enhanced stage matched most of each chunk: 4, 3 and 3 left
    logic = stage(items_per_request="chunk")
    decisions = logic.decide(left, earlier)
    assert [d.catalog_id for d in decisions] == [truth[i] for i in left["item_id"]]
    (body,) = server.bodies()  # one request for the three chunks' ten leftovers
    assert len(answer_enums(body)) == 10

    per_chunk = [
        logic.chunk_metadata([d for d, key in zip(decisions, left["chunk_key"], strict=True) if key == chunk])
        for chunk in left["chunk_key"].unique()
    ]
    assert [m["requests"] for m in per_chunk] == [1, 0, 0]  # filed under its first item's chunk
    assert [m["prompt_tokens"] > 0 for m in per_chunk] == [True, False, False]


def test_top_k_limits_the_candidates_shown(server, stage) -> None:
    items, earlier, _ = synthetic_workload(1, k=10)
    stage(top_k=3, items_per_request="item").decide(items, earlier)
    (body,) = server.bodies()
    assert answer_enums(body) == {"i1": ["c1", "c2", "c3", "none"]}


def test_only_candidates_within_the_score_band_are_shown(server, stage) -> None:
    items, earlier, truth = synthetic_workload(1, k=10)
    for rank, candidate in enumerate(earlier["it-0"].candidates):
        candidate.score = 0.9 - 0.09 * rank  # the true entry is first; from the sixth on, > 0.4 behind
    (decision,) = stage(score_band=0.4).decide(items, earlier)
    (body,) = server.bodies()
    assert answer_enums(body) == {"i1": ["c1", "c2", "c3", "c4", "c5", "none"]}
    assert decision.catalog_id == truth["it-0"] and len(decision.candidates) == 5  # what was shown is kept


def test_429_waits_for_retry_after_then_succeeds(server, stage) -> None:
    items, earlier, truth = synthetic_workload(1)
    server.retry_after_s = 1.0
    server.script("rate_limit")
    began = time.perf_counter()
    (decision,) = stage().decide(items, earlier)
    assert time.perf_counter() - began >= 1.0
    assert server.statuses() == [429, 200] and decision.catalog_id == truth["it-0"]


def test_insufficient_quota_fails_at_once_with_a_clear_message(server, stage) -> None:
    items, earlier, _ = synthetic_workload(3)
    server.script("quota")
    began = time.perf_counter()
    with pytest.raises(dg.Failure, match="no quota left.*insufficient_quota") as failure:
        stage(items_per_request="chunk").decide(items, earlier)
    assert isinstance(failure.value.__cause__, QuotaExhausted)
    assert server.statuses() == [429] and time.perf_counter() - began < 2


@pytest.mark.parametrize("failure", ["error", "slow"])
def test_server_errors_and_timeouts_are_retried(server, stage, failure) -> None:
    items, earlier, truth = synthetic_workload(1)
    server.slow_s = 3.0
    server.script(failure, failure)
    (decision,) = stage(timeout_s=0.5).decide(items, earlier)
    assert decision.catalog_id == truth["it-0"] and server.count == 3
    assert server.statuses()[:2] == ([500, 500] if failure == "error" else [200, 200])  # slow ones came too late


def test_a_server_that_keeps_failing_fails_the_block(server, stage) -> None:
    items, earlier, _ = synthetic_workload(1)
    server.script(*["error"] * 5)
    with pytest.raises(dg.Failure, match="failed after 2 attempt") as failure:
        stage(max_retries=1).decide(items, earlier)
    assert isinstance(failure.value.__cause__, ChatAPIError)
    assert server.count == 2


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [("malformed", "malformed"), ("outside", "unknown_candidate"), ("refusal", "refusal"), ("length", "cut_off")],
)
def test_invalid_replies_are_asked_once_more_then_recorded_never_matched(server, stage, behaviour, kind) -> None:
    items, earlier, truth = synthetic_workload(2)
    server.script(behaviour, behaviour)  # the chunk request, then the retry of its two items
    decisions = stage(items_per_request="chunk").decide(items, earlier)
    assert server.count == 2
    assert all(d.catalog_id is None and d.method == "llm" and d.error.startswith(kind) for d in decisions)

    server.reset()  # errors are not cached: the next run asks again, and one bad reply is retried
    server.script(behaviour)
    again = stage(items_per_request="chunk").decide(items, earlier)
    assert server.count == 2 and [d.catalog_id for d in again] == [truth["it-0"], truth["it-1"]]


def test_answers_are_cached_so_a_rerun_makes_no_request(server, stage) -> None:
    items, earlier, truth = synthetic_workload(15)
    items.loc[3, "description"] = "Acme Widget Model 3 blue"  # unchanged: still a hit
    first = stage(items_per_request="item").decide(items, earlier)
    asked = server.count
    assert asked == 15

    logic = stage(items_per_request="chunk")  # the other shape reuses the answers
    second = logic.decide(items, earlier)
    assert server.count == asked
    assert [d.catalog_id for d in second] == [d.catalog_id for d in first] == list(truth.values())
    assert all(d.evidence["cached"] for d in second)
    meta = logic.chunk_metadata(second[:10])
    assert meta["requests"] == 0 and meta["cache_hits"] == 10 and meta["estimated_cost_usd"] == 0

    stage(model="another-model").decide(items.head(1), earlier)  # a new model asks anew
    stage(refresh_cache=True).decide(items.head(1), earlier)  # and so does refresh
    assert server.count == asked + 2


def test_items_without_candidates_are_not_sent(server, stage) -> None:
    items, earlier, _ = synthetic_workload(2)
    del earlier["it-1"]
    decisions = stage().decide(items, earlier)
    assert server.count == 1 and decisions[1].method == "none" and decisions[1].catalog_id is None


# -- through Dagster ------------------------------------------------------------------------------


def ingest(settings: Settings, instance: dg.DagsterInstance, n: int) -> list[str]:
    db = ResultsDatabase(settings.database_url)
    batch = db.add_batch("acme", "items.csv", f"sha-{n}", SAMPLE_ITEMS.head(n))
    db.dispose()
    ensure_partitions(instance, batch.chunk_keys)
    return batch.chunk_keys


def build_defs(settings: Settings, monkeypatch: pytest.MonkeyPatch, **env: str) -> dg.Definitions:
    """Definitions over ``settings`` plus ``env``: the secrets (key, base URL) go to the environment,
    where the resource reads them through ``EnvVar``; ``MATCHING_*`` values join the settings, which
    the definitions take everything else from."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from matching_pipeline.definitions import build_definitions

    fields = {name.removeprefix("MATCHING_").lower(): value for name, value in env.items() if name.startswith("MATCHING_")}
    return build_definitions(settings.replace(**fields) if fields else settings)


def chunk_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, object]]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    return {
        r.event_log_entry.asset_materialization.partition: {k: v.value for k, v in r.event_log_entry.asset_materialization.metadata.items()}
        for r in records
    }


def test_ai_asset_over_several_chunks_then_a_rerun_from_cache(settings, instance, server, monkeypatch) -> None:
    keys = ingest(settings, instance, 25)
    secret = "sk-test-not-a-real-key-4242"
    defs = build_defs(settings, monkeypatch, OPENAI_BASE_URL=server.url, OPENAI_API_KEY=secret,
                      MATCHING_AI_MODEL="test-model", MATCHING_AI_ITEMS_PER_REQUEST="item")
    assert run_stage(defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai"])[0].success
    (outcome,) = run_stage(defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai"])
    assert outcome.success, outcome.error

    meta = chunk_metadata(instance, outcome.run_id)
    assert sorted(meta) == keys  # one materialization per chunk
    assert sum(m["requests"] for m in meta.values()) == server.count > 0
    assert sum(m["prompt_tokens"] for m in meta.values()) > 0 and all("note" not in m for m in meta.values())
    assert {r.authorization for r in server.received} == {f"Bearer {secret}"}

    db = ResultsDatabase(settings.database_url)
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT method, catalog_id, candidates, error FROM match_results WHERE stage = 'ai'")).all()
    assert len(rows) == sum(m["decided"] for m in meta.values()) > 0
    assert sum(r.method == "llm" for r in rows) == server.count and not any(r.error for r in rows)

    asked = server.count
    (again,) = run_stage(defs, instance, "ai", keys, job_id="j2", stages=["ai"])
    assert again.success and server.count == asked  # re-materialising pays nothing
    assert sum(m["cache_hits"] for m in chunk_metadata(instance, again.run_id).values()) == asked

    events = instance.all_logs(outcome.run_id) + instance.all_logs(again.run_id)
    assert not any(secret in str(e) for e in events)  # the key never reaches events or metadata
    db.dispose()


def test_ai_asset_fails_the_step_on_insufficient_quota(settings, instance, server, monkeypatch) -> None:
    keys = ingest(settings, instance, 20)
    defs = build_defs(settings, monkeypatch, OPENAI_BASE_URL=server.url)
    assert run_stage(defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai"])[0].success
    server.script("quota")
    (outcome,) = run_stage(defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai"])
    assert not outcome.success and "no quota left" in outcome.error
    assert server.statuses().count(429) == 1 and server.count <= len(keys)  # in flight at most, never retried


def test_unconfigured_ai_stage_skips_with_a_note(settings, instance, monkeypatch) -> None:
    keys = ingest(settings, instance, 25)
    defs = build_defs(settings, monkeypatch)
    assert run_stage(defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai"])[0].success
    (outcome,) = run_stage(defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai"])
    assert outcome.success
    meta = chunk_metadata(instance, outcome.run_id)
    assert sorted(meta) == keys and all(m["note"] == SKIPPED_NOTE and m["requests"] == 0 for m in meta.values())
    assert _stage_note(instance, [outcome.run_id]) == SKIPPED_NOTE

    db = ResultsDatabase(settings.database_url)
    results = db.stage_results("ai", keys)
    decided = [d for chunk in results.values() for d in chunk.values()]
    assert decided and all(
        d.method == "skipped" and d.catalog_id is None and d.error is None and d.evidence == {"skipped": "no model configured"}
        for d in decided
    )
    db.dispose()
