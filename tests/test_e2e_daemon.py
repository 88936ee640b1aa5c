"""End to end on the real Postgres: `dagster-daemon run` and `dagster-webserver` as processes.

A file dropped in the inbox is picked up by the sensor, the runs go through the cascade, the
status view (read from the same Postgres storage) reports the job completed, the webhook sensor
posts it signed, the webserver's GraphQL shows the same runs, and a job created through the API
(submitted to the run queue) is launched by the daemon too.

Timing: the daemon's sensor loop (5 s) and backfill loop (30 s, from the daemon's start) are
fixed by Dagster, and the cascade sensor gets through one succeeded run per loop. So the test waits
on conditions (polled every quarter second), takes the inbox file at first sight (the settle rule
has its own tests in test_bad_files.py), and launches the backfill as soon as the drop's cascade
has finished, to catch the backfill daemon's loop 30 s after start rather than the one at 60 s;
the API job and the other checks overlap the backfill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import POSTGRES_ADMIN_URL
from tests.helpers import free_port
from tests.servers.webhook_receiver import SECRET, Receiver

pytestmark = [pytest.mark.postgres, pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def fresh_database():
    name = f"mp_e2e_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name, drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    finally:
        from matching_pipeline.defs.resources import open_results_database

        open_results_database.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def view_chunks(instance: dg.DagsterInstance, job_id: str) -> list[str]:
    from matching_pipeline.defs.job_facts import load_job

    facts = load_job(instance, job_id)
    assert facts is not None
    return facts.chunks


def _wait(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc, log in procs:
            assert proc.poll() is None, f"{proc.args[0]} exited:\n{Path(log).read_text()[-3000:]}"
        value = predicate()
        if value:
            print(f"{time.strftime('%X')} {what}", flush=True)
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def test_inbox_file_goes_through_daemon_cascade_and_status_reports_completed(tmp_path, generated_sample, monkeypatch) -> None:  # noqa: F811
    receiver = Receiver([])
    with fresh_database() as dagster_url, fresh_database() as results_url:
        home = tmp_path / "dagster_home"
        home.mkdir()
        shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
        data = tmp_path / "data"
        env = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_POSTGRES_URL": dagster_url,
            "MATCHING_DATA_DIR": str(data),
            "MATCHING_DATABASE_URL": results_url,
            "MATCHING_CATALOG_PATH": str(generated_sample["catalog"]),
            "MATCHING_WEBHOOK_URL": receiver.url,
            "MATCHING_WEBHOOK_SECRET": SECRET,
            "MATCHING_NOTIFY_INTERVAL_SECONDS": "1",
            # Taken at first sight: what this test proves is not the settle rule (test_bad_files.py).
            "MATCHING_INBOX_SETTLE_SECONDS": "0",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        child_env = dict(os.environ)  # no model or search keys: see conftest.clean_env

        # Build the catalog's retrieval index once here (as the catalog job would), so that the
        # runs load it instead of each building it while the others wait for CPU.
        from matching_pipeline.defs.resources import CatalogResource

        CatalogResource(path=str(generated_sample["catalog"]), index_dir=str(data / "catalog_index")).load_index()

        port = free_port()
        procs = []
        try:
            for name, args in (
                ("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"]),
                ("webserver", [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]),
            ):
                log = tmp_path / f"{name}.log"
                proc = subprocess.Popen(args, cwd=REPO, env=child_env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
                procs.append((proc, log))

            def webserver_up():
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            _wait(webserver_up, 90, "the webserver", procs)

            # Drop a file in the inbox, as an upload that finished a while ago.
            inbox = data / "inbox" / "acme"
            inbox.mkdir(parents=True)
            items = pd.read_csv(generated_sample["items"], dtype=str, keep_default_na=False).head(35)
            path = inbox / "items.csv"
            items.to_csv(path, index=False)
            past = time.time() - 60
            os.utime(path, (past, past))

            from matching_pipeline.defs.resources import open_results_database
            from matching_pipeline.jobs import control
            from matching_pipeline.jobs.status import job_status, list_jobs
            from matching_pipeline.results.ingest import ingest_file

            instance = dg.DagsterInstance.get()
            try:
                jobs = _wait(lambda: list_jobs(instance, "acme"), 90, "the sensor to start a job", procs)
                job_id = jobs[0]["id"]
                assert job_id.endswith("-ingest") and jobs[0]["jobType"] == "all"
                view = _wait(
                    lambda: (v := job_status(instance, job_id))["status"] in ("completed", "failed") and v,
                    240, "the cascade to finish", procs,
                )
                assert view["status"] == "completed", view
                assert view["totalItems"] == 35 and view["processedItems"] == 35 and view["progressPercentage"] == 100.0
                assert [s["doneChunks"] for s in view["stages"]] == [4, 4, 4]
                assert view["matchesFound"] > 0 and view["completedAt"] and view["error"] is None

                # A backfill of enhanced_matches alone, launched as the UI does (GraphQL), is a job:
                # the cascade carries its chunks through AI and web search under the backfill's id.
                # Launched now, as the backfill daemon looks only every 30 s; checked last.
                mutation = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
                    __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
                params = {"partitionNames": view_chunks(instance, job_id), "assetSelection": [{"path": ["enhanced_matches"]}]}
                launched = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": mutation, "variables": {"params": params}}, timeout=60).json()
                backfill_id = launched["data"]["launchPartitionBackfill"].get("backfillId")
                assert backfill_id, launched

                # Meanwhile, a job created as the API does it: submitted to the run queue. (Created
                # now, while the backfill waits for its daemon: every run that succeeds takes the
                # cascade sensor one daemon loop, so earlier it would delay the drop's cascade.)
                other = tmp_path / "globex.csv"
                items.head(12).to_csv(other, index=False)
                batch = ingest_file(open_results_database(results_url), other, "globex")
                api_job = control.create_job(instance, batch, "enhanced")
                assert job_status(instance, api_job)["status"] == "pending"

                # The webhook sensor posted the completed view, signed.
                def posted_for(job: str):
                    return [json.loads(b) for b, _, valid in receiver.received if valid and json.loads(b)["job"]["id"] == job]

                (posted,) = _wait(lambda: posted_for(job_id), 60, "the webhook", procs)
                assert posted["event"] == "job.completed" and posted["job"]["status"] == "completed"
                assert all(valid for _, _, valid in receiver.received)

                # The webserver shows the same runs (it reads the same Postgres storage).
                query = '{ runsOrError(filter: {tags: [{key: "matching/job", value: "' + job_id + '"}]}) { ... on Runs { results { jobName status } } } }'
                runs = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": query}, timeout=30).json()["data"]["runsOrError"]["results"]
                assert sorted(r["jobName"] for r in runs) == ["ai_job", "enhanced_job", "web_search_job"]
                assert {r["status"] for r in runs} == {"SUCCESS"}

                # The submitted job was launched by the daemon from the queue.
                done = _wait(
                    lambda: (v := job_status(instance, api_job))["status"] in ("completed", "failed") and v,
                    120, "the daemon to run the submitted job", procs,
                )
                assert done["status"] == "completed" and done["processedItems"] == 12

                # The backfill launched above goes through the cascade.
                carried = _wait(
                    lambda: (v := job_status(instance, backfill_id)) and v["status"] in ("completed", "failed") and v,
                    240, "the backfill's chunks to go through the cascade", procs,
                )
                assert carried["status"] == "completed" and carried["backfill"] and carried["processedItems"] == 35, carried
                assert [s["doneChunks"] for s in carried["stages"]] == [4, 4, 4]
                assert backfill_id in {v["id"] for v in list_jobs(instance, "acme")}
            finally:
                instance.dispose()
        finally:
            for proc, _ in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc, _ in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            receiver.close()
