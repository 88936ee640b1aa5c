"""Speed and memory of the enhanced stage at the old system's scale, through the CLI.

    python bench/speed_pipeline.py [--items 21737] [--catalog 50000] [--backend sqlite|postgres|both]

For each backend it measures, in one run of this script:
  * index_s     building the catalog index (pure core, in this process)
  * match_s     matching every item with the enhanced stage (pure core, in blocks as the asset does)
  * floor_s     Dagster's bookkeeping floor: a fresh process materialising the same chunks, in the
                same runs, with a no-op asset (imports, instance, runs, one event per chunk)
  * cli_s       wall time of `matching-pipeline match --stages enhanced` on a fresh instance
  * peak_mb     the CLI process's peak RSS
floor_s and cli_s are the best of --repeat alternating runs (the machines are noisy), and it prints
ratio = cli_s / (index_s + match_s + floor_s): orchestration and storage may add at most
20% (target ratio <= 1.2). Targets: index_s <= 30, match_s <= 30, peak_mb <= 2048.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

NOOP_SCRIPT = """
import sys, time, warnings
warnings.filterwarnings("ignore")
began = time.perf_counter()
import dagster as dg
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.jobs.runner import run_stage
keys = open(sys.argv[1]).read().split()
spec = STAGE_SPECS["enhanced"]

@dg.asset(name=spec.asset_name, partitions_def=chunk_partitions, output_required=False, backfill_policy=spec.backfill_policy)
def noop(context: dg.AssetExecutionContext):
    for key in context.partition_keys:
        yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata={"items": 10, "matched": 0})

# Same job name, run plan, tags and run config as the real stage: only the work differs.
defs = dg.Definitions(assets=[noop], jobs=[dg.define_asset_job(spec.job_name, selection=[noop])])
instance = dg.DagsterInstance.get()
instance.add_dynamic_partitions(chunk_partitions.name, keys)
outcomes = run_stage(defs, instance, "enhanced", keys, job_id="noop", stages=["enhanced"])
assert all(o.success for o in outcomes)
print(time.perf_counter() - began)
"""


def postgres_url(name: str) -> str:
    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def create_pg_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()


def drop_pg_database(name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url("postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
    engine.dispose()


def environment(work: Path, backend: str, tag: str) -> tuple[dict[str, str], list[str]]:
    """A fresh DAGSTER_HOME and data dir; on Postgres, fresh databases for both stores."""
    home = work / f"dagster_home_{tag}"
    home.mkdir(parents=True)
    config = (REPO / "dagster.yaml").read_text()
    env = {**os.environ, "DAGSTER_HOME": str(home), "MATCHING_DATA_DIR": str(work / f"data_{tag}")}
    databases: list[str] = []
    if backend == "postgres":
        storage, results = f"bench_dg_{uuid.uuid4().hex[:8]}", f"bench_res_{uuid.uuid4().hex[:8]}"
        for name in (storage, results):
            create_pg_database(name)
        databases = [storage, results]
        config += f"\nstorage:\n  postgres:\n    postgres_url: {postgres_url(storage)}\n"
        env["MATCHING_DATABASE_URL"] = postgres_url(results)
    (home / "dagster.yaml").write_text(config)
    return env, databases


def timed_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB and stdout of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    began = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=21_737)
    parser.add_argument("--catalog", type=int, default=50_000)
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--core-only", action="store_true", help="measure index_s and match_s only")
    parser.add_argument("--repeat", type=int, default=2, help="floor and CLI runs per backend; the best of each counts")
    args = parser.parse_args()

    from matching_pipeline.core.catalog import CatalogIndex, IndexSettings
    from matching_pipeline.core.enhanced import match_enhanced
    from matching_pipeline.core.readers import CATALOG, ITEMS, read_table
    from matching_pipeline.defs.stages import STAGE_SPECS
    from matching_pipeline.results.store import CHUNK_SIZE
    from matching_pipeline.sample.generator import write_sample

    work = Path(tempfile.mkdtemp(prefix="mp-bench-"))
    paths = write_sample(work / "sample", n_catalog=args.catalog, n_items=args.items, seed=args.seed)
    catalog = read_table(paths["catalog"], CATALOG)
    items = read_table(paths["items"], ITEMS)

    began = time.perf_counter()
    index = CatalogIndex.build(catalog, IndexSettings(), version="bench")
    index_s = time.perf_counter() - began

    block = STAGE_SPECS["enhanced"].chunks_per_block * CHUNK_SIZE
    began = time.perf_counter()
    decisions = []
    for start in range(0, len(items), block):
        decisions += match_enhanced(items.iloc[start : start + block], index)
    match_s = time.perf_counter() - began
    matched = sum(d.matched for d in decisions)
    del index, decisions

    print(f"machine: {os.cpu_count()} cores; items {len(items)}, catalog {len(catalog)}")
    print(f"index_s {index_s:.1f}  match_s {match_s:.1f}  (matched {matched}/{len(items)})")
    backends = [] if args.core_only else (["sqlite", "postgres"] if args.backend == "both" else [args.backend])
    n_chunks = -(-len(items) // CHUNK_SIZE)
    failures = []
    for backend in backends:
        floors, clis, peaks = [], [], []
        for attempt in range(args.repeat):  # alternate, and keep the best of each: the machine is noisy
            databases: list[str] = []
            try:
                env, databases = environment(work, backend, f"{backend}_noop{attempt}")
                keys_file = work / "keys.txt"
                keys_file.write_text("\n".join(f"b000001:bench:{i:05d}" for i in range(1, n_chunks + 1)))
                floors.append(timed_child([sys.executable, "-c", NOOP_SCRIPT, str(keys_file)], env)[0])
                for name in databases:
                    drop_pg_database(name)

                env, databases = environment(work, backend, f"{backend}_cli{attempt}")
                cli = [sys.executable, "-m", "matching_pipeline.cli", "match", "--project", "bench", "--items",
                       str(paths["items"]), "--catalog", str(paths["catalog"]), "--stages", "enhanced"]
                cli_s, peak_mb, out = timed_child(cli, env)
                clis.append(cli_s)
                peaks.append(peak_mb)
            finally:
                for name in databases:
                    drop_pg_database(name)
        floor_s, cli_s, peak_mb = min(floors), min(clis), max(peaks)
        budget = index_s + match_s + floor_s
        ratio = cli_s / budget
        print(f"[{backend}] chunks {n_chunks}  floor_s {floor_s:.1f} (of {', '.join(f'{f:.1f}' for f in floors)})  "
              f"cli_s {cli_s:.1f} (of {', '.join(f'{c:.1f}' for c in clis)})  peak_mb {peak_mb:.0f}  "
              f"ratio cli/(index+match+floor) {ratio:.3f}")
        print("  " + out.strip().splitlines()[-3])
        if ratio > 1.2:
            failures.append(f"{backend}: ratio {ratio:.3f} > 1.2")
        if peak_mb > 2048:
            failures.append(f"{backend}: peak {peak_mb:.0f} MB > 2048")
    if index_s > 30:
        failures.append(f"index_s {index_s:.1f} > 30")
    if match_s > 30:
        failures.append(f"match_s {match_s:.1f} > 30")
    print("targets: " + ("all met" if not failures else "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
