"""The second opinion: enhanced fuzzy accepts flagged ``evidence["verify"]`` go to the model.

With a model configured, the AI stage decides them too (same entry: confirmed; none: overturned,
and the item flows on to web search); without one they stay accepted. Everything goes through
the real ``openai`` SDK to ``tests/servers/openai_server.py`` on 127.0.0.1, and through the real
results database, whose ``final_matches`` view must give the latest stage's answer.

The enhanced stage's decisions are made by hand here (``evidence={"verify": True, ...}``), or
taken from a real enhanced run and flagged, so these tests do not depend on where the enhanced
stage puts its verify score.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pandas as pd
import pytest

from matching_pipeline.clients.openai_chat import ChatSession
from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.defs.assets.ai import SECOND_OPINION, AIStage
from matching_pipeline.defs.openai_resource import OpenAIResource
from matching_pipeline.defs.stages import pending_items, wants_verify
from matching_pipeline.jobs.runner import run_stage
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import Settings
from tests.servers.openai_server import FakeOpenAI, answer_enums, best_overlap, read_candidates
from tests.test_ai_stage import build_defs, chunk_metadata, ingest

pytestmark = pytest.mark.timeout(90)

CHUNK = "b000001:acme:00001"


def oracle_by_item(answers: dict[str, str]) -> Callable[[dict[str, Any], list[dict[str, Any]]], str]:
    """A model that answers ``answers[item description]`` (a reference or ``none``), else
    picks by word overlap like the default server."""
    return lambda item, candidates: answers.get(item.get("description", ""), best_overlap(item, candidates))


def accept(item_id: str, chosen: Candidate, *rivals: Candidate, verify: bool = True) -> Decision:
    """An enhanced fuzzy accept as core/enhanced.py writes it: the match first, then its rivals."""
    evidence = {"rule": "fuzzy", "score": chosen.score, "best_score": chosen.score, "margin": 0.2}
    if verify:
        evidence["verify"] = True
    return Decision(item_id, chosen.catalog_id, "fuzzy", chosen.score, evidence, [chosen, *rivals])


TV = Candidate("CAT-TV40", 0.62, "Sony Bravia 40in LCD TV", "KDL-40V4100", "Sony")
TV46 = Candidate("CAT-TV46", 0.41, "Sony Bravia 46in LCD TV", "KDL-46V4100", "Sony")
CASE = Candidate("CAT-CASE", 0.58, "Logitech carrying case for Sony Bravia remote", "LG-77", "Logitech")
ITEMS = pd.DataFrame(
    [
        {"item_id": "tv", "description": "Sony Bravia 40 inch LCD television", "chunk_key": CHUNK},
        {"item_id": "case", "description": "Sony Bravia remote", "chunk_key": CHUNK},
        {"item_id": "plain", "description": "Sony Bravia 40in LCD TV", "chunk_key": CHUNK},
    ]
)
EARLIER = {
    "tv": accept("tv", TV, TV46),
    "case": accept("case", CASE, TV),
}


@pytest.fixture
def db(tmp_path) -> Iterator[ResultsDatabase]:
    database = ResultsDatabase(f"sqlite:///{tmp_path / 'results.db'}")
    yield database
    database.dispose()


@pytest.fixture
def model() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(oracle=oracle_by_item({"Sony Bravia 40 inch LCD television": "c1", "Sony Bravia remote": "none"})) as fake:
        yield fake


@pytest.fixture
def stage(model: FakeOpenAI, db: ResultsDatabase) -> Iterator[Callable[..., AIStage]]:
    with ExitStack() as sessions:

        def make(**config: object) -> AIStage:
            openai = OpenAIResource(**{"base_url": model.url, "model": "test-model", **config})
            return AIStage(openai, sessions.enter_context(ChatSession(openai.chat_settings())), db, None)

        yield make


def test_the_model_confirms_one_accept_and_overturns_another(model, stage) -> None:
    logic = stage(items_per_request="chunk")
    assert logic.verifies_accepts
    tv, case = logic.decide(ITEMS.head(2), EARLIER)

    assert (tv.catalog_id, tv.method, tv.evidence[SECOND_OPINION]) == ("CAT-TV40", "llm", "confirmed")
    assert tv.evidence["accepted"] == {"catalog_id": "CAT-TV40", "method": "fuzzy", "confidence": 0.62}
    assert (case.catalog_id, case.method, case.evidence[SECOND_OPINION]) == (None, "llm", "rejected")
    assert not wants_verify(tv) and not wants_verify(case)  # the second opinion is not asked again
    meta = logic.chunk_metadata([tv, case])
    assert (meta["verified"], meta["verify_confirmed"], meta["verify_rejected"]) == (2, 1, 1)

    # The model saw every saved candidate of the accept (the band would have left the accepted
    # entry alone: its rival scores 0.21 below it) and was not told which one was accepted.
    (body,) = model.bodies()
    assert answer_enums(body) == {"i1": ["c1", "c2", "none"], "i2": ["c1", "c2", "none"]}
    document = body["messages"][-1]["content"]
    assert "CAT-" not in document and "fuzzy" not in document and "verify" not in document


def test_a_second_opinion_that_fails_leaves_the_accept_standing_with_the_error(model, stage) -> None:
    model.script("malformed", "malformed")  # the request, then its one retry
    logic = stage(items_per_request="item")
    (tv,) = logic.decide(ITEMS.head(1), EARLIER)
    assert (tv.catalog_id, tv.method, tv.confidence) == ("CAT-TV40", "fuzzy", 0.62)
    assert tv.error.startswith("malformed") and tv.evidence[SECOND_OPINION] == "failed"
    meta = logic.chunk_metadata([tv])
    assert (meta["verified"], meta["verify_confirmed"], meta["verify_rejected"]) == (1, 0, 0)

    model.reset()  # errors are not cached: retrying asks again, and this time it is confirmed
    (again,) = stage(items_per_request="item").decide(ITEMS.head(1), EARLIER)
    assert (again.catalog_id, again.method, again.error) == ("CAT-TV40", "llm", None)


def test_a_model_that_picks_a_rival_overturns_the_accept_with_its_choice(stage, model) -> None:
    model.oracle = oracle_by_item({"Sony Bravia remote": "c2"})
    (case,) = stage().decide(ITEMS.iloc[[1]], EARLIER)
    assert (case.catalog_id, case.evidence[SECOND_OPINION]) == ("CAT-TV40", "rejected")
    assert stage().chunk_metadata([case])["verify_rejected"] == 1


# -- which items a stage decides: the latest stage's answer counts ---------------------------


def write(db: ResultsDatabase, stage: str, *decisions: Decision) -> None:
    db.replace_results(stage, {CHUNK: list(decisions)}, "v1")


def add_items(db: ResultsDatabase) -> pd.DataFrame:
    batch = db.add_batch("acme", "items.csv", "sha", ITEMS.drop(columns="chunk_key"))
    assert batch.chunk_keys == [CHUNK]
    return db.load_chunk_items([CHUNK])


def test_pending_items_reopen_flagged_accepts_only_for_a_stage_that_verifies(db) -> None:
    frame = add_items(db)
    plain = Decision("plain", None, "none", 0.4, {"rule": None}, [TV, TV46])
    write(db, "enhanced", EARLIER["tv"], EARLIER["case"], plain)

    pending, earlier = pending_items(db, "ai", [CHUNK], frame)
    assert list(pending["item_id"]) == ["plain"] and set(earlier) == {"plain"}
    pending, earlier = pending_items(db, "ai", [CHUNK], frame, verify=True)
    assert list(pending["item_id"]) == ["tv", "case", "plain"] and earlier["tv"] == EARLIER["tv"]
    unflagged = accept("tv", TV, TV46, verify=False)
    write(db, "enhanced", unflagged, EARLIER["case"], plain)
    assert list(pending_items(db, "ai", [CHUNK], frame, verify=True)[0]["item_id"]) == ["case", "plain"]


def test_an_overturned_accept_is_unmatched_for_web_search_and_in_final_matches(db) -> None:
    frame = add_items(db)
    plain = Decision("plain", None, "none", 0.4, {"rule": None}, [TV, TV46])
    write(db, "enhanced", EARLIER["tv"], EARLIER["case"], plain)
    confirmed = Decision("tv", "CAT-TV40", "llm", 0.9, {SECOND_OPINION: "confirmed"}, [TV, TV46])
    overturned = Decision("case", None, "llm", 0.8, {SECOND_OPINION: "rejected"}, [CASE, TV])
    write(db, "ai", confirmed, overturned, Decision("plain", "CAT-TV40", "llm", 0.9, {}, [TV, TV46]))

    # Web search (which never verifies) decides what has no match now: the overturned accept.
    pending, earlier = pending_items(db, "web_search", [CHUNK], frame)
    assert list(pending["item_id"]) == ["case"] and earlier["case"].catalog_id is None
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc["tv", ["stage", "catalog_id"]].tolist() == ["ai", "CAT-TV40"]
    assert final.loc["case", "stage"] == "ai" and pd.isna(final.loc["case", "catalog_id"])

    write(db, "web_search", Decision("case", "CAT-CASE", "web", 0.8, {}, [CASE]))
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc["case", ["stage", "catalog_id"]].tolist() == ["web_search", "CAT-CASE"]


# -- through Dagster ------------------------------------------------------------------------------


def flag_two_accepts(settings: Settings, keys: list[str]) -> tuple[Decision, Decision]:
    """Mark two of the real enhanced stage's accepts for a second opinion, as the enhanced stage
    does below its verify score; returns them."""
    db = ResultsDatabase(settings.database_url)
    results = db.stage_results("enhanced", keys)
    chosen = [d for key in keys for d in results[key].values() if d.method == "fuzzy" and len(d.candidates) > 1][:2]
    assert len(chosen) == 2, "the sample needs two fuzzy accepts with rivals"
    for decision in chosen:
        decision.evidence["verify"] = True
    db.replace_results("enhanced", {key: list(results[key].values()) for key in keys}, "v1")
    db.dispose()
    return chosen[0], chosen[1]


def descriptions(settings: Settings, *item_ids: str) -> list[str]:
    db = ResultsDatabase(settings.database_url)
    frame = db.final_matches("acme").set_index("item_id")
    db.dispose()
    return [frame.loc[i, "description"] for i in item_ids]


def test_through_dagster_a_configured_model_verifies_and_web_search_takes_the_overturned(settings, instance, model, monkeypatch) -> None:
    keys = ingest(settings, instance, 20)
    defs = build_defs(settings, monkeypatch, OPENAI_BASE_URL=model.url, MATCHING_AI_ITEMS_PER_REQUEST="chunk")
    assert run_stage(defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai", "web_search"])[0].success
    confirm, reject = flag_two_accepts(settings, keys)
    model.oracle = oracle_by_item(dict(zip(descriptions(settings, confirm.item_id, reject.item_id), ("c1", "none"), strict=True)))

    (outcome,) = run_stage(defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai", "web_search"])
    assert outcome.success, outcome.error
    meta = chunk_metadata(instance, outcome.run_id)
    assert sum(m["verified"] for m in meta.values()) == 2
    assert sum(m["verify_confirmed"] for m in meta.values()) == sum(m["verify_rejected"] for m in meta.values()) == 1
    entries = [entry for body in model.bodies() for entry in json.loads(body["messages"][-1]["content"]).values()]
    (asked,) = [e for e in entries if e["item"]["description"] == descriptions(settings, confirm.item_id)[0]]
    assert len(read_candidates(asked)) == len(confirm.candidates)  # all of the accept's candidates

    db = ResultsDatabase(settings.database_url)
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc[confirm.item_id, ["stage", "method", "catalog_id"]].tolist() == ["ai", "llm", confirm.catalog_id]
    assert final.loc[reject.item_id, "stage"] == "ai" and pd.isna(final.loc[reject.item_id, "catalog_id"])

    # No search provider: web search decides (skips) what is unmatched now, the overturned
    # accept included, and passes the confirmed one through.
    (web,) = run_stage(defs, instance, "web_search", keys, job_id="j1", stages=["enhanced", "ai", "web_search"])
    assert web.success, web.error
    searched = {i for chunk in db.stage_results("web_search", keys).values() for i in chunk}
    assert reject.item_id in searched and confirm.item_id not in searched
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc[reject.item_id, "stage"] == "web_search" and pd.isna(final.loc[reject.item_id, "catalog_id"])
    assert final.loc[confirm.item_id, ["stage", "catalog_id"]].tolist() == ["ai", confirm.catalog_id]
    db.dispose()


def test_through_dagster_without_a_model_flagged_accepts_stay_accepted(settings, instance, monkeypatch) -> None:
    keys = ingest(settings, instance, 20)
    defs = build_defs(settings, monkeypatch)
    assert run_stage(defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai"])[0].success
    first, second = flag_two_accepts(settings, keys)
    (outcome,) = run_stage(defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai"])
    assert outcome.success, outcome.error
    assert all(m["verified"] == 0 for m in chunk_metadata(instance, outcome.run_id).values())

    db = ResultsDatabase(settings.database_url)
    decided = {i for chunk in db.stage_results("ai", keys).values() for i in chunk}
    assert decided and first.item_id not in decided and second.item_id not in decided
    final = db.final_matches("acme").set_index("item_id")
    for decision in (first, second):
        assert final.loc[decision.item_id, ["stage", "method", "catalog_id"]].tolist() == ["enhanced", "fuzzy", decision.catalog_id]
    db.dispose()

