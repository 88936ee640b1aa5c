"""Database restarts under a running pipeline, on a private Postgres cluster the tests start,
stop and restart themselves (never the shared server on 5432).

A short outage is ridden out (safe operations retry on a fresh connection); a long one ends the
command with one line and exit status 3, never a traceback, leaves no run NOT_STARTED or
STARTED for good, and the same command run again finishes the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from matching_pipeline.core.models import Decision
from matching_pipeline.results.faults import DatabaseUnavailable, connection_fault
from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import SAMPLE_DIR
from tests.pg_cluster import PostgresCluster
from tests.servers.openai_server import FakeOpenAI

pytestmark = pytest.mark.postgres  # a private cluster on a spare port

ROOT = Path(__file__).parents[1]


def test_a_short_restart_is_ridden_out_by_reads_and_chunk_writes(cluster: PostgresCluster, monkeypatch) -> None:
    monkeypatch.setenv("MATCHING_DB_RETRY_SECONDS", "20")
    db = ResultsDatabase(cluster.create_database("results"))
    key = "b000001:acme:00001"
    assert db.finished_chunks("ai", [key]) == set()  # a pooled connection now exists

    cluster.stop()  # every connection dropped; back in 1.5 s
    threading.Timer(1.5, cluster.start).start()
    decisions = [Decision("i1", "C1", "llm", 0.9, {}, [])]
    db.replace_results("ai", {key: decisions}, None)  # retried until the server is back
    assert db.finished_chunks("ai", [key]) == {key}
    assert len(db.stage_results("ai", [key])[key]) == 1
    db.dispose()


def test_a_long_outage_surfaces_as_one_line(cluster: PostgresCluster, monkeypatch) -> None:
    monkeypatch.setenv("MATCHING_DB_RETRY_SECONDS", "1")
    db = ResultsDatabase(cluster.create_database("results"))
    cluster.stop()
    with pytest.raises(DatabaseUnavailable) as caught:
        db.finished_chunks("ai", ["b000001:acme:00001"])
    message = str(caught.value)
    assert message.startswith("results database unreachable for 1s: ") and "\n" not in message
    assert connection_fault(caught.value) == message
    assert connection_fault(ValueError("not a database problem")) is None
    db.dispose()


def _env(tmp_path: Path, cluster: PostgresCluster, server: FakeOpenAI, *, dagster_on_postgres: bool) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    config = ROOT / "deploy" / "postgres" / "dagster.yaml" if dagster_on_postgres else ROOT / "dagster.yaml"
    (home / "dagster.yaml").write_text(config.read_text())
    env = dict(os.environ)  # without the pipeline's variables: see conftest.clean_env
    env.update(
        DAGSTER_HOME=str(home),
        MATCHING_DATABASE_URL=cluster.create_database("results"),
        MATCHING_DATA_DIR=str(tmp_path / "data"),
        OPENAI_BASE_URL=server.url,
        OPENAI_API_KEY="sk-test",
        MATCHING_AI_MAX_CONCURRENCY="1",
        PYTHONUNBUFFERED="1",
    )
    if dagster_on_postgres:
        env["DAGSTER_POSTGRES_URL"] = cluster.create_database("dagster")
    return env


COMMAND = [sys.executable, "-m", "matching_pipeline.cli", "match", "--project", "demo",
           "--items", str(SAMPLE_DIR / "items.csv"), "--stages", "enhanced,ai"]


def _start_and_wait_for_the_ai_stage(env: dict[str, str], server: FakeOpenAI) -> subprocess.Popen:
    process = subprocess.Popen(COMMAND, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while server.count < 2:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the AI stage never started"
        time.sleep(0.05)
    return process


def _assert_all_done_once(env: dict[str, str]) -> None:
    engine = sa.create_engine(env["MATCHING_DATABASE_URL"])
    with engine.connect() as conn:
        answers = conn.execute(sa.text("SELECT count(*) FROM final_matches")).scalar()
        chunks = conn.execute(sa.text("SELECT stage, count(*) FROM stage_chunks GROUP BY stage")).all()
        dupes = conn.execute(sa.text(
            "SELECT count(*) FROM (SELECT item_id, stage FROM match_results GROUP BY item_id, stage HAVING count(*) > 1) d"
        )).scalar()
    engine.dispose()
    assert answers == 120 and dict(chunks) == {"enhanced": 12, "ai": 12} and dupes == 0


def _run_statuses(env: dict[str, str]) -> Counter:
    names = ("DAGSTER_HOME", "DAGSTER_POSTGRES_URL")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: env[k] for k in names if k in env})
    try:
        with dg.DagsterInstance.get() as instance:
            return Counter(r.status for r in instance.get_runs())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


LIVE = {dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}


@pytest.mark.slow
def test_results_database_down_during_the_ai_stage_fails_the_run_in_one_line_and_a_rerun_finishes(
    tmp_path: Path, cluster: PostgresCluster
) -> None:
    with FakeOpenAI(latency_s=0.3) as server:
        env = {**_env(tmp_path, cluster, server, dagster_on_postgres=False), "MATCHING_DB_RETRY_SECONDS": "2"}
        first = _start_and_wait_for_the_ai_stage(env, server)
        cluster.stop()  # for longer than the retries
        out, err = first.communicate(timeout=120)
        assert first.returncode == 3, out + err
        assert "Traceback" not in out + err
        ai_line = next(line for line in out.splitlines() if line.startswith("[ai]") and "FAILED" in line)
        assert "results database unreachable for 2s: connection to server at" in ai_line
        assert err.strip().splitlines()[-1].startswith("matching-pipeline: database unavailable: results database unreachable")
        assert not LIVE & set(_run_statuses(env))  # the failed run is recorded as failed

        cluster.start()
        again = subprocess.run(COMMAND, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
    _assert_all_done_once(env)


@pytest.mark.slow
def test_a_postgres_restart_under_dagster_storage_and_results_is_ridden_out(tmp_path: Path, cluster: PostgresCluster) -> None:
    with FakeOpenAI(latency_s=0.3) as server:
        env = _env(tmp_path, cluster, server, dagster_on_postgres=True)
        first = _start_and_wait_for_the_ai_stage(env, server)
        cluster.restart(down_s=2)
        out, err = first.communicate(timeout=180)
        assert first.returncode == 0, out + err
        assert "Traceback" not in out + err and "WARNING" not in err
    _assert_all_done_once(env)
    assert not LIVE & set(_run_statuses(env))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MATCHING_SLOW_TESTS"), reason="about 2 minutes of dagster-postgres retries; set MATCHING_SLOW_TESTS=1")
def test_dagster_storage_gone_for_good_ends_the_cli_in_one_line_and_a_rerun_finishes(tmp_path: Path, cluster: PostgresCluster) -> None:
    with FakeOpenAI(latency_s=0.3) as server:
        env = {**_env(tmp_path, cluster, server, dagster_on_postgres=True), "MATCHING_DB_RETRY_SECONDS": "2"}
        first = _start_and_wait_for_the_ai_stage(env, server)
        cluster.stop()
        out, err = first.communicate(timeout=300)
        assert first.returncode == 3, out + err
        assert "Traceback" not in out + err and "WARNING" not in err, err
        # Dagster itself writes one line per event it could not store; the cause ends the output.
        assert err.strip().splitlines()[-1].startswith("matching-pipeline: database unavailable: "), err

        cluster.start()
        again = subprocess.run(COMMAND, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
    _assert_all_done_once(env)
    assert not LIVE & set(_run_statuses(env))  # the run the outage interrupted was reaped as failed
