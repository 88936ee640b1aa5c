"""Shared-nothing run workers: items per second at 1, 2 and 4 concurrent workers.

    python bench/shared_nothing.py [--items 21737] [--catalog 50000] [--workers 1,2,4]

Every worker is a separate process, as a Kubernetes run pod is: its own empty MATCHING_DATA_DIR
and DAGSTER_HOME, sharing only the PostgreSQL server on 127.0.0.1:5432 (Dagster storage and the
results database) and an S3 endpoint (moto's server, started here). The catalog index is built
once by this script and published to the store; each worker downloads it and loads it once.

For each worker count the script makes a fresh database, stores the item list as one batch with
its chunk partitions, splits the chunks into that many contiguous ranges, starts the workers
together (each runs the enhanced stage over its range in process, in runs of the stage's usual
size) and times them until the last one exits. Then it checks that every item was decided once and
every chunk materialised once. On 2 cores, 2 workers should help (one worker's Dagster
bookkeeping and database writes leave a core idle) and 4 should not.

    python bench/shared_nothing.py worker --first KEY --last KEY

is one worker (also used by tests/test_object_storage.py); it prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ADMIN_URL = os.environ.get("MATCHING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def worker(first: str, last: str) -> int:
    """One run worker: the enhanced stage over ``first..last``, everything else from the environment."""
    import warnings

    warnings.filterwarnings("ignore")
    began = time.perf_counter()
    import dagster as dg

    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.defs.partitions import chunk_partitions
    from matching_pipeline.jobs.runner import run_stage

    defs = build_definitions()
    instance = dg.DagsterInstance.get()
    ordered = instance.get_dynamic_partitions(chunk_partitions.name)
    keys = ordered[ordered.index(first) : ordered.index(last) + 1]
    loading = time.perf_counter()
    index, built = defs.resources["catalog_source"].load_index()  # the runs below reuse it from memory
    index_s = time.perf_counter() - loading
    outcomes = run_stage(
        defs, instance, "enhanced", keys, job_id=f"worker-{os.getpid()}", stages=["enhanced"], say=lambda _: None
    )
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "chunks": len(keys),
                "runs": len(outcomes),
                "runs_ok": all(o.success for o in outcomes),
                "errors": [o.error for o in outcomes if o.error],
                "index_built": built,
                "index_version": index.version,
                "index_s": round(index_s, 2),
                "seconds": round(time.perf_counter() - began, 2),
            }
        )
    )
    return 0 if all(o.success for o in outcomes) else 1


def _split(keys: list[str], parts: int) -> list[tuple[str, str]]:
    size = -(-len(keys) // parts)
    return [(keys[i], keys[min(i + size, len(keys)) - 1]) for i in range(0, len(keys), size)]


def _measure(workers: int, sample: dict[str, Path], s3, root: Path) -> dict:
    import dagster as dg
    import pandas as pd
    import sqlalchemy as sa

    from matching_pipeline.defs.partitions import chunk_partitions
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.results.store import ResultsDatabase

    name = f"mp_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        home = root / name  # one folder per measurement, so a worker count may be repeated
        (home / "dagster_home").mkdir(parents=True)
        (home / "dagster_home" / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {url}\n")
        db = ResultsDatabase(url)
        batch = ingest_file(db, sample["items"], "bench")
        with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
            instance.add_dynamic_partitions(chunk_partitions.name, batch.chunk_keys)
        procs = []
        load_before = os.getloadavg()[0]
        began = time.perf_counter()
        for i, (first, last) in enumerate(_split(batch.chunk_keys, workers)):
            pod = home / f"pod{i}"
            (pod / "data").mkdir(parents=True)
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("MATCHING_")},
                **s3.env(),
                "DAGSTER_HOME": str(home / "dagster_home"),
                "MATCHING_DATA_DIR": str(pod / "data"),
                "MATCHING_DATABASE_URL": url,
                "MATCHING_CATALOG_PATH": str(sample["catalog"]),
                "MATCHING_INDEX_URL": s3.url("index"),
                "PYTHONPATH": str(REPO),
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "worker", "--first", first, "--last", last],
                    env=env, cwd=pod, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                )
            )
        reports = []
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"worker failed: {err[-2000:]}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        wall = time.perf_counter() - began
        with db.engine.connect() as conn:
            decided = pd.read_sql(sa.text("SELECT item_id FROM match_results WHERE stage = 'enhanced'"), conn)
            chunks = conn.execute(sa.text("SELECT COUNT(*) FROM stage_chunks WHERE stage = 'enhanced'")).scalar_one()
        db.engine.dispose()
        with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
            materialized = instance.get_materialized_partitions(dg.AssetKey("enhanced_matches"))
        return {
            "workers": workers,
            "wall_s": round(wall, 1),
            "items_per_s": round(batch.item_count / wall, 1),
            "items": batch.item_count,
            "decided": len(decided),
            "decided_unique": decided["item_id"].nunique(),
            "chunks": len(batch.chunk_keys),
            "chunks_done": chunks,
            "chunks_materialized": len(materialized & set(batch.chunk_keys)),
            "index_built_by_a_worker": any(r["index_built"] for r in reports),
            "worker_index_load_s": [r["index_s"] for r in reports],
            "worker_s": [r["seconds"] for r in reports],
            # The machine is shared: the 1-minute load average around the measurement says how much.
            "load_1min_before_after": [round(load_before, 1), round(os.getloadavg()[0], 1)],
        }
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("worker")
    one.add_argument("--first", required=True)
    one.add_argument("--last", required=True)
    parser.add_argument("--items", type=int, default=21_737)
    parser.add_argument("--catalog", type=int, default=50_000)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    if args.command == "worker":
        return worker(args.first, args.last)

    from matching_pipeline.defs.resources import CatalogResource
    from matching_pipeline.sample.generator import write_sample
    from tests.servers.s3_server import FAKE_CREDENTIALS, moto_s3

    os.environ.update(FAKE_CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="shared-nothing-") as tmp, moto_s3() as s3:
        root = Path(tmp)
        sample = write_sample(root / "sample", n_catalog=args.catalog, n_items=args.items, seed=0)
        began = time.perf_counter()
        _, built = CatalogResource(
            path=str(sample["catalog"]), index_dir=str(root / "publisher"), index_url=s3.url("index"),
            s3_endpoint_url=s3.endpoint_url,
        ).load_index()
        print(json.dumps({"index_published_s": round(time.perf_counter() - began, 1), "built": built}), flush=True)
        results = []
        for workers in [int(w) for w in args.workers.split(",")]:
            result = _measure(workers, sample, s3, root)
            results.append(result)
            print(json.dumps(result), flush=True)
        base = results[0]["wall_s"]
        for r in results:
            print(
                f"workers={r['workers']}: wall {r['wall_s']} s, {r['items_per_s']} items/s, "
                f"wall / first run's {r['wall_s'] / base:.2f}, load {r['load_1min_before_after']}"
            )
        ok = all(
            r["decided"] == r["decided_unique"] == r["items"] and r["chunks_done"] == r["chunks_materialized"] == r["chunks"]
            for r in results
        )
        print("nothing lost, nothing duplicated, every chunk once:", ok)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
