"""Small-drop latency: a 30-item file dropped into the inbox of an idle instance, to `completed`.

    python bench/small_drop_latency.py [--backend sqlite|postgres] [--items 30] [--done-marker]

Starts ``dagster-daemon run -w workspace.yaml`` as a process (as ``make dev`` does, without the
webserver, which plays no part in running), with the instance config of the repository
(``dagster.yaml``, or ``deploy/postgres/dagster.yaml`` on a fresh database of the Postgres server at
``MATCHING_TEST_POSTGRES_URL``), the bundled catalog already materialized (an idle instance, not a
first start), no model and no search provider. Once the daemon's sensors are ticking, it drops a
file of ``--items`` items (written elsewhere and renamed into the inbox, as an upload tool does;
``--done-marker`` also writes ``<name>.done``), then polls the job-status view until the job of
that batch says ``completed``, and prints the time from the drop, with when each stage's chunks were
all materialized. Target (issue 11): at most 30 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BIN = Path(sys.executable).parent
TARGET_S = 30.0
ASSETS = ("enhanced_matches", "ai_matches", "web_search_matches")


def machine() -> str:
    cpus = os.cpu_count()
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown CPU",
    )
    return f"{cpus} CPUs, {model}; load average {os.getloadavg()[0]:.1f}"


def fresh_postgres_database() -> tuple[str, str]:
    import sqlalchemy as sa

    admin_url = os.environ.get("MATCHING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    name = f"mp_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name, drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    admin.dispose()
    return name, url


def drop_postgres_database(name: str) -> None:
    import sqlalchemy as sa

    admin = sa.create_engine(
        os.environ.get("MATCHING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()")
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--done-marker", action="store_true")
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()

    for name in list(os.environ):
        if name.upper().startswith(("MATCHING_", "OPENAI_", "SEARXNG_", "BRAVE_", "DAGSTER_")) and not name.startswith("MATCHING_TEST_"):
            del os.environ[name]
    tmp = Path(tempfile.mkdtemp(prefix="small_drop_"))
    home, data = tmp / "dagster_home", tmp / "data"
    home.mkdir()
    databases: list[str] = []
    if args.backend == "postgres":
        name, url = fresh_postgres_database()
        databases.append(name)
        shutil.copy(REPO / "deploy" / "postgres" / "dagster.yaml", home / "dagster.yaml")
        os.environ["DAGSTER_POSTGRES_URL"] = url
        name, results_url = fresh_postgres_database()
        databases.append(name)
    else:
        shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
        results_url = f"sqlite:///{data / 'results.db'}"
    os.environ.update(DAGSTER_HOME=str(home), MATCHING_DATA_DIR=str(data), MATCHING_DATABASE_URL=results_url)

    import dagster as dg
    import pandas as pd

    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.defs.assets.catalog import catalog
    from matching_pipeline.jobs.runner import restore_interrupts
    from matching_pipeline.jobs.status import list_jobs
    from matching_pipeline.settings import SAMPLE_DIR, Settings

    print(f"machine: {machine()}; backend {args.backend}", flush=True)
    instance = dg.DagsterInstance.get()
    defs = build_definitions(Settings.from_env())
    # An idle instance has built its catalog already.
    assert dg.materialize([catalog], resources={"catalog_source": defs.resources["catalog_source"]}, instance=instance).success

    log = tmp / "daemon.log"
    restore_interrupts()  # started in the background, the daemon would otherwise ignore SIGTERM
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO, env=dict(os.environ), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert daemon.poll() is None, log.read_text()[-3000:]
            if "SensorDaemon" in log.read_text() and "Checking for new runs for sensor: new_items_sensor" in log.read_text():
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"the sensors never ticked:\n{log.read_text()[-3000:]}")
        time.sleep(6)  # a full sensor loop more: the instance is idle now

        items = pd.read_csv(SAMPLE_DIR / "items.csv", dtype=str, keep_default_na=False).head(args.items)
        inbox = data / "inbox" / "acme"
        inbox.mkdir(parents=True, exist_ok=True)
        staging = tmp / "items.csv"
        items.to_csv(staging, index=False)
        dropped = time.time()
        os.replace(staging, inbox / "items.csv")
        if args.done_marker:
            (inbox / "items.csv.done").touch()

        stage_done: dict[str, float] = {}
        status = None
        while time.time() - dropped < args.timeout:
            keys = [k for k in instance.get_dynamic_partitions("chunks") if ":acme:" in k]
            for asset in ASSETS:
                if asset not in stage_done and keys and set(keys) <= instance.get_materialized_partitions(dg.AssetKey(asset)):
                    stage_done[asset] = time.time() - dropped
            views = list_jobs(instance, "acme")
            status = views[-1]["status"] if views else None
            if status == "completed":
                break
            time.sleep(0.25)
        took = time.time() - dropped
        # Where the time went: each run's creation (queued), start and end, from the drop.
        for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp):
            if record.dagster_run.job_name.startswith("__"):
                continue
            marks = [record.create_timestamp.timestamp(), record.start_time, record.end_time]
            print(
                f"  {record.dagster_run.job_name:16} queued {marks[0] - dropped:6.1f}s  "
                + "  ".join(f"{what} {m - dropped:6.1f}s" for what, m in zip(("started", "ended"), marks[1:], strict=True) if m)
            )
    finally:
        # The daemon's session holds its code server too: stop them together, or the code server
        # outlives the benchmark.
        os.killpg(daemon.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(20)
        with contextlib.suppress(ProcessLookupError):  # a code server that ignored SIGTERM
            os.killpg(daemon.pid, signal.SIGKILL)
        instance.dispose()
        for name in databases:
            drop_postgres_database(name)
        shutil.rmtree(tmp, ignore_errors=True)
    stages = "  ".join(f"{asset}: {seconds:.1f}s" for asset, seconds in stage_done.items())
    print(f"[{args.backend}] {args.items} items dropped -> {status} in {took:.1f}s (target <= {TARGET_S:g}s)  {stages}")
    if status != "completed" or took > TARGET_S:
        print("MISSED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
