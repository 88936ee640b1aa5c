"""kill -9 of ``matching-pipeline match`` during the AI stage: the next ``match`` recovers by itself.

Before: the killed run stayed STARTED holding the ``openai`` pool slot (limit 1), and the next
``match`` waited for it for ever at 100% CPU. Now the next ``match`` sees that the process holding
the slot is gone, fails that run, frees the slot, and finishes the job: every item decided once,
and no answer paid for twice except the one request in flight at the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from matching_pipeline.sample.generator import write_sample
from matching_pipeline.settings import SAMPLE_DIR
from tests.servers.openai_server import FakeOpenAI
from tests.servers.search_server import FakeSearch

pytestmark = pytest.mark.slow  # each test runs the CLI as a process, twice

ROOT = Path(__file__).parents[1]
LATENCY_S = 0.25


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency_s=LATENCY_S) as fake:
        yield fake


def _env(tmp_path: Path, server: FakeOpenAI | None = None, search: FakeSearch | None = None) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())  # pools: default_limit 1
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MATCHING_", "OPENAI_", "SEARXNG", "BRAVE"))}
    env.update(DAGSTER_HOME=str(home), MATCHING_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    if server is not None:
        env.update(
            OPENAI_BASE_URL=server.url,
            OPENAI_API_KEY="sk-test",
            MATCHING_AI_MODEL="test-model",
            # One request at a time, one per chunk, so answers arrive (and are cached) one by one.
            MATCHING_AI_MAX_CONCURRENCY="1",
            MATCHING_AI_ITEMS_PER_REQUEST="chunk",
        )
    if search is not None:
        env.update(SEARXNG_URL=search.url, MATCHING_SEARCH_QPS="200", MATCHING_SEARCH_MAX_CONCURRENCY="1")
    return env


def _match(env: dict[str, str], stages: str = "enhanced,ai", items: Path = SAMPLE_DIR / "items.csv") -> list[str]:
    return [sys.executable, "-m", "matching_pipeline.cli", "match", "--project", "demo",
            "--items", str(items), "--stages", stages]


def _results(tmp_path: Path, stage: str) -> tuple[int, dict[str, int], int, int]:
    """Items stored, rows per item of ``stage``, chunks ``stage`` finished, final answers."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'data' / 'results.db'}")
    try:
        with engine.connect() as conn:
            items = conn.execute(sa.text("SELECT count(*) FROM items")).scalar()
            per_item = dict(conn.execute(
                sa.text("SELECT item_id, count(*) FROM match_results WHERE stage = :s GROUP BY item_id"), {"s": stage}
            ).all())
            chunks = conn.execute(sa.text("SELECT count(*) FROM stage_chunks WHERE stage = :s"), {"s": stage}).scalar()
            answers = conn.execute(sa.text("SELECT count(*) FROM final_matches")).scalar()
    finally:
        engine.dispose()
    return items, per_item, chunks, answers


def _asked(server: FakeOpenAI) -> list[tuple[float, str]]:
    """When each request arrived, and what it asked (its items and candidates, as sent)."""
    return [(received.at, received.body["messages"][-1]["content"]) for received in server.received]


def test_after_kill_9_during_the_ai_stage_the_next_match_recovers_and_pays_nothing_twice(
    tmp_path: Path, server: FakeOpenAI
) -> None:
    env = _env(tmp_path, server)
    first = subprocess.Popen(_match(env), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while server.count < 3:  # the AI stage holds the pool slot and has cached at least two answers
        assert first.poll() is None, f"match ended before the AI stage got going:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "the AI stage never started"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(10)
    first.stdout.close()
    asked_before_kill = server.count

    began = time.monotonic()
    second = subprocess.Popen(_match(env), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while server.count == asked_before_kill and second.poll() is None:
        assert time.monotonic() - began < 60, "the next match did not start deciding within 60 s"
        time.sleep(0.05)
    assert server.count > asked_before_kill, "the next match never asked the model"
    first_request_after_s = time.monotonic() - began
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output
    print(output)
    assert "marked 1 run(s) failed whose process is gone" in output
    assert first_request_after_s < 60

    data = tmp_path / "data"
    engine = sa.create_engine(f"sqlite:///{data / 'results.db'}")
    with engine.connect() as conn:
        items = conn.execute(sa.text("SELECT count(*) FROM items")).scalar()
        per_item = dict(conn.execute(sa.text("SELECT item_id, count(*) FROM match_results WHERE stage = 'ai' GROUP BY item_id")).all())
        by_model = {r[0] for r in conn.execute(sa.text("SELECT item_id FROM match_results WHERE stage = 'ai' AND method = 'llm'"))}
        chunks = conn.execute(sa.text("SELECT count(*) FROM stage_chunks WHERE stage = 'ai'")).scalar()
        answers = conn.execute(sa.text("SELECT count(*) FROM final_matches")).scalar()
    engine.dispose()
    assert items == answers == 120 and chunks == 12  # nothing lost: every item has its one answer
    assert per_item and set(per_item.values()) == {1}  # nothing duplicated
    assert by_model  # the model's answers are recorded

    # Paid twice only for what was in flight at the kill: with one request at a time, the one
    # request that arrived in the last LATENCY_S before the kill.
    asked = _asked(server)
    repeated = {content for content, n in Counter(c for _, c in asked).items() if n > 1}
    in_flight = {content for at, content in asked if killed_at - LATENCY_S - 0.2 <= at <= killed_at}
    assert len(repeated) <= 1 and repeated <= in_flight, "a request answered before the kill was paid again"

    os.environ["DAGSTER_HOME"], saved = env["DAGSTER_HOME"], os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.get() as instance:
            runs = instance.get_runs(dg.RunsFilter(tags={"matching/project": "demo"}))
            statuses = Counter(r.status for r in runs if r.job_name == "ai_job")
            assert statuses == {dg.DagsterRunStatus.FAILURE: 1, dg.DagsterRunStatus.SUCCESS: 1}
            failed = next(r for r in runs if r.status == dg.DagsterRunStatus.FAILURE)
            assert not instance.event_log_storage.get_concurrency_info("openai").claimed_slots
            assert failed.tags["matching/pid"] == str(first.pid)
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = saved


def test_after_kill_9_during_the_web_search_stage_the_next_match_finishes_and_repeats_no_query(tmp_path: Path) -> None:
    """The same for the web-search stage and its pool: answered queries are cached, never sent again."""
    with FakeSearch(latency_s=LATENCY_S) as search:
        env = _env(tmp_path, search=search)
        stages = "enhanced,ai,web_search"  # no model: the AI stage passes its items on untouched
        first = subprocess.Popen(_match(env, stages), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while search.count < 3:
            assert first.poll() is None, f"match ended before the web-search stage got going:\n{first.stdout.read()}"
            assert time.monotonic() < deadline, "the web-search stage never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        first.wait(10)
        first.stdout.close()
        asked_before_kill = search.count

        began = time.monotonic()
        second = subprocess.run(_match(env, stages), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        assert search.count > asked_before_kill
        assert time.monotonic() - began < 120

        items, per_item, chunks, answers = _results(tmp_path, "web_search")
        assert items == answers == 120 and chunks == 12
        assert per_item and set(per_item.values()) == {1}
        # A query is sent again only if it was in flight at the kill (its answer never cached).
        repeated = [q for q, n in search.query_counts().items() if n > 1]
        in_flight = {r.query for r in search.received if killed_at - LATENCY_S - 0.2 <= r.at <= killed_at}
        assert set(repeated) <= in_flight, f"answered queries were sent again: {repeated}"


def test_after_kill_9_during_the_enhanced_stage_a_rerun_finishes_the_rest_without_duplicates(tmp_path: Path) -> None:
    """The enhanced stage holds no pool, but its finished chunks must stay finished and count once."""
    paths = write_sample(tmp_path / "sample", n_catalog=2_000, n_items=3_000, seed=3)
    env = _env(tmp_path)
    env["MATCHING_CATALOG_PATH"] = str(paths["catalog"])
    env["MATCHING_CHUNKS_PER_RUN_ENHANCED"] = "20"  # several runs, so the kill lands between two of them
    first = subprocess.Popen(_match(env, "enhanced", paths["items"]), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    database = tmp_path / "data" / "results.db"
    while True:
        assert first.poll() is None, f"match ended before the kill:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "the enhanced stage never wrote a chunk"
        try:
            if database.exists() and _results(tmp_path, "enhanced")[2] >= 20:
                break
        except sa.exc.OperationalError:  # the schema is still being created
            pass
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    first.stdout.close()
    done_at_kill = _results(tmp_path, "enhanced")[2]
    assert done_at_kill < 300, "the stage finished before the kill; nothing was tested"

    second = subprocess.run(_match(env, "enhanced", paths["items"]), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    items, per_item, chunks, answers = _results(tmp_path, "enhanced")
    assert items == answers == 3_000 and chunks == 300
    assert len(per_item) == 3_000 and set(per_item.values()) == {1}
