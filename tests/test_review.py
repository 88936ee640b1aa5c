"""The review loop end to end: the queue in the results database (SQLite and the real Postgres),
human decisions that no stage run overwrites, the CLI's export and all-or-nothing import, the
HTTP API over real HTTP, and the open count in the summary asset."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.api import create_app
from matching_pipeline.cli import main
from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.definitions import build_resources
from matching_pipeline.defs.assets.summary import match_summary
from matching_pipeline.defs.resources import open_results_database
from matching_pipeline.jobs.runner import run_stage
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import Settings
from tests.helpers import ingest_items, serve_app

TOKEN = "review-t0ken"
OLD_VIEW = """
CREATE VIEW final_matches AS
SELECT r.* FROM match_results r
WHERE (CASE r.stage WHEN 'enhanced' THEN 0 WHEN 'ai' THEN 1 WHEN 'web_search' THEN 2 END) = (
    SELECT MAX(CASE l.stage WHEN 'enhanced' THEN 0 WHEN 'ai' THEN 1 WHEN 'web_search' THEN 2 END) FROM match_results l
    WHERE l.project = r.project AND l.item_id = r.item_id
)
"""
"""The view as databases made before human decisions existed hold it."""


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_database")


@pytest.fixture
def db(db_url: str) -> Iterator[ResultsDatabase]:
    database = ResultsDatabase(db_url)
    yield database
    database.dispose()


def c(catalog_id: str, score: float, description: str = "") -> Candidate:
    return Candidate(catalog_id, score, description or f"entry {catalog_id}")


def seed(db: ResultsDatabase, ids: list[str], cat: list[str], descriptions: list[str] | None = None) -> str:
    """Six items whose enhanced and AI decisions cover every way into and out of the queue.

    Open afterwards: ids[0] (verify), ids[4] (a low-confidence model match), ids[5] (blocked at
    enhanced, the model had nothing to choose from). Closed: ids[1] (blocked, then confidently
    matched by the model), ids[2] (nothing close), ids[3] (a GTIN match).
    """
    frame = pd.DataFrame({"item_id": ids, "description": descriptions or [f"product {i}" for i in ids]})
    key = db.add_batch("acme", "items.csv", "h-review", frame).chunk_keys[0]
    db.replace_results(
        "enhanced",
        {
            key: [
                Decision(ids[0], cat[0], "fuzzy", 0.62, {"rule": "fuzzy", "score": 0.62, "verify": True}, [c(cat[0], 0.62), c(cat[1], 0.4)]),
                Decision(ids[1], None, "none", 0.7, {"blocked": True, "conflict": "colour"}, [c(cat[1], 0.7)]),
                Decision(ids[2], None, "none", 0.2, {}, [c(cat[2], 0.2)]),
                Decision(ids[3], cat[3], "gtin", 1.0, {"rule": "gtin"}, [c(cat[3], 0.9)]),
                Decision(ids[4], None, "none", 0.3, {}, [c(cat[4], 0.3), c(cat[5], 0.25)]),
                Decision(ids[5], None, "none", 0.66, {"blocked": True, "conflict": "edition: academic"}, [c(cat[5], 0.66), c(cat[0], 0.3)]),
            ]
        },
        "v1",
    )
    db.replace_results(
        "ai",
        {
            key: [
                Decision(ids[1], cat[2], "llm", 0.95, {"reason": "same colour"}, [c(cat[2], 0.5)]),
                Decision(ids[2], None, "llm", 0.9, {}, [c(cat[2], 0.2)]),
                Decision(ids[4], cat[4], "llm", 0.55, {"reason": "probably"}, [c(cat[4], 0.3), c(cat[5], 0.25)]),
                Decision(ids[5], None, "none", 0.0, {"reason": "no candidates to choose from"}, []),
            ]
        },
        "v1",
    )
    return key


IDS = [f"i{n}" for n in range(6)]
CAT = [f"c{n}" for n in range(6)]


def test_the_queue_holds_the_doubtful_until_a_person_decides(db: ResultsDatabase) -> None:
    key = seed(db, IDS, CAT)
    queue = {r.item_id: r for r in db.open_reviews("acme")}
    assert list(queue) == ["i0", "i4", "i5"]  # arrival order
    assert queue["i0"].reason.startswith("verify:") and queue["i0"].stage == "enhanced"
    assert queue["i4"].reason.startswith("low_confidence:") and queue["i4"].reason_stage == "ai"
    assert queue["i4"].decision.catalog_id == "c4"
    # An earlier stage's doubt stays open while the item is unmatched; the candidates shown are
    # the doubting stage's when the current answer has none.
    assert queue["i5"].reason.startswith("conflict:") and queue["i5"].reason_stage == "enhanced" and queue["i5"].stage == "ai"
    assert [x.catalog_id for x in queue["i5"].decision.candidates] == ["c5", "c0"]
    assert db.open_review_count("acme") == 3

    db.record_human_decisions("acme", {"i0": "c1", "i4": None}, source="test")
    assert [r.item_id for r in db.open_reviews("acme")] == ["i5"]
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc["i0", "stage"] == "human" and final.loc["i0", "catalog_id"] == "c1" and final.loc["i0", "method"] == "human"
    assert final.loc["i4", "stage"] == "human" and final.loc["i4", "catalog_id"] is None
    assert db.human_decisions("acme").to_dict("records") == [{"item_id": "i0", "catalog_id": "c1"}, {"item_id": "i4", "catalog_id": None}]
    with db.engine.connect() as conn:
        evidence = conn.execute(
            sa.select(sa.column("evidence", sa.JSON)).select_from(sa.table("match_results"))
            .where(sa.column("stage") == "human", sa.column("item_id") == "i0")
        ).scalar_one()
    assert evidence["previous"] == {"stage": "enhanced", "catalog_id": "c0", "method": "fuzzy", "confidence": 0.62}
    assert evidence["review_reason"].startswith("verify:") and evidence["source"] == "test"

    summary = db.project_summary("acme")
    assert summary["open_reviews"] == 1 and summary["reviewed"] == 2
    assert summary["by_stage"]["human"] == {"matched": 1, "methods": {"human": 1}, "match_rate": round(1 / 6, 4)}
    assert list(summary["by_stage"]) == ["enhanced", "ai", "human"]

    # A re-run of every stage writes its own rows again and never touches a person's.
    db.replace_results("enhanced", {key: [Decision(i, "c9", "gtin", 1.0, {}, []) for i in IDS]}, "v2")
    db.replace_results("ai", {key: []}, "v2")
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc["i0", "catalog_id"] == "c1" and final.loc["i4", "catalog_id"] is None
    assert (final.loc[["i1", "i2", "i3", "i5"], "catalog_id"] == "c9").all()
    assert db.open_review_count("acme") == 0  # nothing doubtful is left after the re-run
    with pytest.raises(ValueError, match="not a stage of the cascade"):
        db.replace_results("human", {key: [Decision("i1", "c2", "human", 1.0)]}, "v2")
    with pytest.raises(ValueError, match="'nope'"):
        db.record_human_decisions("acme", {"i1": "c2", "nope": None}, source="test")
    assert len(db.human_decisions("acme")) == 2  # a refused call writes nothing


def test_an_old_database_gets_the_new_ranking_even_when_processes_start_at_once(db_url: str) -> None:
    database = ResultsDatabase(db_url)
    key = seed(database, IDS, CAT)
    database.record_human_decisions("acme", {"i3": "c0"}, source="test")
    with database.engine.begin() as conn:  # make it a database of the previous version
        conn.exec_driver_sql("DROP VIEW final_matches")
        conn.exec_driver_sql(OLD_VIEW)
        conn.exec_driver_sql("DROP TABLE review_reasons")
        conn.exec_driver_sql("DROP TABLE schema_marks")
        conn.exec_driver_sql("DROP TABLE results_alembic_version")  # it predates migrations
    assert database.final_matches("acme").set_index("item_id").loc["i3", "stage"] == "enhanced"  # human unranked
    database.dispose()

    barrier = threading.Barrier(4)
    opened: list[ResultsDatabase] = []
    failures: list[BaseException] = []

    def start() -> None:  # like the webserver, the daemon, a run and the CLI starting together
        try:
            barrier.wait()
            opened.append(ResultsDatabase(db_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures and len(opened) == 4
    final = opened[0].final_matches("acme").set_index("item_id")
    assert final.loc["i3", "stage"] == "human" and final.loc["i3", "catalog_id"] == "c0"
    # The new table exists and is written from now on.
    opened[0].replace_results("enhanced", {key: [Decision("i2", None, "none", 0.9, {}, [c("c2", 0.9)])]}, "v2")
    assert [r.item_id for r in opened[0].open_reviews("acme")] == ["i2"]
    for database in opened:
        database.dispose()


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultsDatabase:
    """The CLI's environment on the bundled sample catalog, with the seeded queue in its database."""
    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path / "data"))
    open_results_database.cache_clear()
    database = open_results_database(f"sqlite:///{(tmp_path / 'data' / 'results.db').resolve()}")
    yield database
    open_results_database.cache_clear()


SAMPLE_CAT = [f"CAT-{n:06d}" for n in range(1, 7)]
CLI_IDS = ["=cmd|' /C calc'!A0", "a1", "a2", "a3", "-7", "a5"]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_cli_exports_the_queue_and_imports_decisions_all_or_nothing(cli_env: ResultsDatabase, tmp_path: Path, capsys) -> None:
    seed(cli_env, CLI_IDS, SAMPLE_CAT, ["=HYPERLINK(\"http://evil\")"] + [f"product {n}" for n in range(1, 6)])
    out = tmp_path / "review.csv"
    assert main(["review", "export", "--project", "acme", "--out", str(out)]) == 0
    assert "wrote 3 open review items" in capsys.readouterr().out
    exported = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert exported["item_id"].tolist() == ["'=cmd|' /C calc'!A0", "'-7", "a5"]  # formulas neutralised
    assert exported.loc[0, "description"] == "'=HYPERLINK(\"http://evil\")"
    assert exported.loc[0, "catalog_id"] == SAMPLE_CAT[0] and exported.loc[0, "reason"].startswith("verify:")
    assert exported.loc[2, "c1_id"] == SAMPLE_CAT[5] and exported.loc[2, "c2_id"] == SAMPLE_CAT[0]
    assert {"c1_description", "c1_score", "c2_score", "evidence", "reason_stage", "project"} <= set(exported.columns)
    assert "c3_id" not in exported.columns and (exported["decision"] == "").all()
    assert exported.columns[-1] == "decision"

    def fill(decisions: list[str], name: str, frame: pd.DataFrame = exported) -> Path:
        filled = frame.copy()
        filled["decision"] = decisions
        path = tmp_path / name
        filled.to_csv(path, index=False)
        return path

    def refused(path: Path) -> str:
        assert main(["review", "import", str(path)]) == 2
        err = capsys.readouterr().err
        assert "nothing was applied" in err and cli_env.human_decisions("acme").empty
        return err

    # Every bad row is named, and nothing is applied.
    err = refused(fill(["this", "CAT-999999", "none"], "unknown-catalog.csv"))
    assert "row 2, column 'decision': unknown catalog id 'CAT-999999'" in err
    renamed = exported.copy()
    renamed.loc[2, "item_id"] = "ghost"
    err = refused(fill(["this", "none", "accept"], "unknown-item.csv", renamed))
    assert "row 3, column 'item_id': unknown item_id 'ghost'" in err
    doubled = pd.concat([exported, exported.iloc[[1]]], ignore_index=True)
    err = refused(fill(["this", "none", "", "CAT-000002"], "duplicate.csv", doubled))
    assert "row 4, column 'item_id': duplicate item_id '-7' (also row 2)" in err
    err = refused(fill(["", "", "accept"], "accept-unmatched.csv"))
    assert "row 3, column 'decision': 'accept' but the item has no proposed match" in err
    err = refused(write_rows(tmp_path / "no-decision.csv", ["project", "item_id"], [["acme", "a5"]]))
    assert "missing column 'decision'" in err
    err = refused(write_rows(tmp_path / "two-projects.csv", ["project", "item_id", "decision"], [["acme", "a5", "none"], ["other", "x", "none"]]))
    assert "one project's rows" in err

    # A good file: this / another catalog id / none, and an empty decision skipped.
    assert main(["review", "import", str(fill(["this", " CAT-000003 ", ""], "good.csv"))]) == 0
    assert "applied 2 decisions (2 matched, 0 none of these); skipped 1 rows" in capsys.readouterr().out
    final = cli_env.final_matches("acme").set_index("item_id")
    assert final.loc[CLI_IDS[0], "stage"] == "human" and final.loc[CLI_IDS[0], "catalog_id"] == SAMPLE_CAT[0]
    assert final.loc["-7", "stage"] == "human" and final.loc["-7", "catalog_id"] == "CAT-000003"
    assert [r.item_id for r in cli_env.open_reviews("acme")] == ["a5"]
    # The queue's own file needs no project column when --project names it.
    plain = write_rows(tmp_path / "plain.csv", ["item_id", "decision"], [["a5", "None"]])
    assert main(["review", "import", str(plain), "--project", "acme"]) == 0
    assert "applied 1 decisions (0 matched, 1 none of these)" in capsys.readouterr().out
    assert cli_env.open_review_count("acme") == 0
    assert main(["summary", "--project", "acme"]) == 0
    assert "human" in capsys.readouterr().out
    results = tmp_path / "results.csv"
    assert main(["export", "--project", "acme", "--out", str(results)]) == 0
    exported = pd.read_csv(results, dtype=str, keep_default_na=False).set_index("item_id")
    assert exported.loc["a5", "stage"] == "human" and exported.loc["a5", "catalog_id"] == ""
    assert exported.loc["'-7", "catalog_id"] == "CAT-000003"
    assert main(["review", "export", "--project", "nobody", "--out", str(out)]) == 2
    assert "project 'nobody' has no items" in capsys.readouterr().err


# -- the pipeline: re-runs keep a person's decision -------------------------------------------------


def test_rerunning_the_stages_keeps_human_decisions_final(job_settings, job_defs, instance, generated_sample) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 30)
    keys = batch.chunk_keys
    (enhanced,) = run_stage(job_defs, instance, "enhanced", keys, job_id="j1", stages=["enhanced", "ai"], say=lambda _: None)
    assert enhanced.success, enhanced.error
    assert run_stage(job_defs, instance, "ai", keys, job_id="j1", stages=["enhanced", "ai"], say=lambda _: None)[0].success
    db = open_results_database(job_settings.database_url)

    records = instance.get_records_for_run(enhanced.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    flagged = sum(r.event_log_entry.asset_materialization.metadata["to_review"].value for r in records)
    with db.engine.connect() as conn:
        assert flagged == conn.execute(sa.text("SELECT COUNT(*) FROM review_reasons WHERE stage = 'enhanced'")).scalar_one() > 0

    final = db.final_matches("acme")
    was_matched = final[final["catalog_id"].notna()]["item_id"].iloc[0]
    was_unmatched = final[final["catalog_id"].isna()]["item_id"].iloc[0]
    catalog_id = pd.read_csv(generated_sample["catalog"], dtype=str)["catalog_id"].iloc[7]
    db.record_human_decisions("acme", {was_matched: None, was_unmatched: catalog_id}, source="test")

    def human_rows() -> list[tuple]:
        with db.engine.connect() as conn:
            return conn.execute(sa.text("SELECT item_id, catalog_id, decided_at FROM match_results WHERE stage = 'human' ORDER BY item_id")).all()

    def stage_written() -> set:
        with db.engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT DISTINCT decided_at FROM match_results WHERE stage IN ('enhanced', 'ai')")).scalars())

    before, written = human_rows(), stage_written()
    for stage in ("enhanced", "ai"):  # a forced re-run, as after a catalog change
        assert run_stage(job_defs, instance, stage, keys, job_id="j2", stages=["enhanced", "ai"], say=lambda _: None)[0].success
    assert human_rows() == before and not stage_written() & written  # the stages' rows are all new
    with db.engine.connect() as conn:  # the later stage no longer spends a call on what a person decided
        ai_items = set(conn.execute(sa.text("SELECT item_id FROM match_results WHERE stage = 'ai'")).scalars())
    assert ai_items and was_unmatched not in ai_items and was_matched not in ai_items
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc[was_matched, "stage"] == "human" and final.loc[was_matched, "catalog_id"] is None
    assert final.loc[was_unmatched, "stage"] == "human" and final.loc[was_unmatched, "catalog_id"] == catalog_id
    open_ids = {r.item_id for r in db.open_reviews("acme")}
    assert was_matched not in open_ids and was_unmatched not in open_ids

    # The summary asset shows each project's open count in the UI.
    result = dg.materialize([match_summary], instance=instance, resources={k: job_defs.resources[k] for k in ("results", "inbox")})
    metadata = result.asset_materializations_for_node("match_summary")[0].metadata
    assert metadata["open_reviews/acme"].value == db.open_review_count("acme") == metadata["open_reviews"].value
    assert metadata["open_reviews_by_project"].value == {"acme": db.open_review_count("acme")}
    assert "human_matched" in metadata["summary"].value


# -- the HTTP API ----------------------------------------------------------------------------------


@pytest.fixture
def api(job_settings, job_defs, instance) -> Iterator[tuple[httpx.Client, ResultsDatabase, list[str]]]:
    db = open_results_database(job_settings.database_url)
    catalog = job_defs.resources["catalog_source"].load_frame()["catalog_id"].tolist()
    seed(db, IDS, catalog)
    with serve_app(create_app(instance, settings=job_settings, defs=job_defs, token=TOKEN), token=TOKEN) as client:
        yield client, db, catalog


def test_api_lists_the_queue_and_takes_decisions(api) -> None:
    client, db, catalog = api
    assert httpx.get(f"{client.base_url}/api/projects/acme/review").status_code == 401
    assert httpx.post(f"{client.base_url}/api/projects/acme/review/i0", json={"catalog_id": None}).status_code == 401

    listed = client.get("/api/projects/acme/review")
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["success"] is True and body["total"] == 3 and [i["itemId"] for i in body["items"]] == ["i0", "i4", "i5"]
    first = body["items"][0]
    assert first["reason"].startswith("verify:") and first["decision"]["catalogId"] == catalog[0]
    assert first["decision"]["stage"] == "enhanced" and first["item"]["description"] == "product i0"
    assert [c["catalog_id"] for c in first["candidates"]] == [catalog[0], catalog[1]]
    assert [i["itemId"] for i in client.get("/api/projects/acme/review", params={"limit": 1, "offset": 1}).json()["items"]] == ["i4"]
    for params in ({"limit": 0}, {"limit": "x"}, {"offset": -1}):
        assert client.get("/api/projects/acme/review", params=params).status_code == 400
    assert client.get("/api/projects/nobody/review").status_code == 404

    decided = client.post("/api/projects/acme/review/i0", json={"catalog_id": catalog[2]})
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"] == {"itemId": "i0", "stage": "human", "catalogId": catalog[2]} and decided.json()["openReviews"] == 2
    assert client.post("/api/projects/acme/review/i4", json={"catalog_id": None}).json()["openReviews"] == 1
    assert db.human_decisions("acme").set_index("item_id")["catalog_id"].to_dict() == {"i0": catalog[2], "i4": None}

    bad = {
        "unknown catalog id": (client.post("/api/projects/acme/review/i5", json={"catalog_id": "NOT-AN-ID"}), 400),
        "missing key": (client.post("/api/projects/acme/review/i5", json={"id": "x"}), 400),
        "wrong type": (client.post("/api/projects/acme/review/i5", json={"catalog_id": 7}), 400),
        "empty id": (client.post("/api/projects/acme/review/i5", json={"catalog_id": "  "}), 400),
        "not json": (client.post("/api/projects/acme/review/i5", content=b"{oops"), 400),
        "not an object": (client.post("/api/projects/acme/review/i5", json=[None]), 400),
        "unknown item": (client.post("/api/projects/acme/review/ghost", json={"catalog_id": None}), 404),
        "unknown project": (client.post("/api/projects/nobody/review/i5", json={"catalog_id": None}), 404),
        "wrong method": (client.get("/api/projects/acme/review/i5"), 405),
    }
    for what, (response, status) in bad.items():
        assert response.status_code == status, (what, response.text)
        assert response.json()["success"] is False and response.json()["error"], what
    assert "NOT-AN-ID" in bad["unknown catalog id"][0].json()["error"]
    assert [i["itemId"] for i in client.get("/api/projects/acme/review").json()["items"]] == ["i5"]


def test_review_settings_come_from_the_environment_to_the_stage_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHING_REVIEW_CONFIDENCE", "0.9")
    monkeypatch.setenv("MATCHING_REVIEW_CLOSE_SCORE", "0.65")
    settings = Settings.from_env()
    assert settings.review == ReviewSettings(confidence=0.9, close_score=0.65)
    assert build_resources(settings)["results"].review() == settings.review
    monkeypatch.setenv("MATCHING_REVIEW_CLOSE_SCORE", "65")
    with pytest.raises(ValueError, match="MATCHING_REVIEW_CLOSE_SCORE='65': Input should be less than or equal to 1"):
        Settings.from_env()
    monkeypatch.setenv("MATCHING_REVIEW_CLOSE_SCORE", "high")
    with pytest.raises(ValueError, match="MATCHING_REVIEW_CLOSE_SCORE='high': Input should be a valid number"):
        Settings.from_env()
