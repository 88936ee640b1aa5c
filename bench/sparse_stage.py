"""A sparse stage: about 250 items left for web search, spread over 2,174 chunks (issue 11, item 7).

    python bench/sparse_stage.py [--chunks 2174] [--pending 250] [--latency 1.0] [--qps 20] [--old-plan]

The seed-scale case: after the enhanced and AI stages only a few items per hundred chunks are
still unmatched, yet the web-search stage used to be planned by chunk count (runs of 50 chunks,
each paying start-up and 50 materializations for chunks with nothing to decide).

The results database is built directly with the store API (enhanced matched every filler item;
the pending items are near-twin pairs only the web can tell apart, as in
bench/web_search_throughput.py, whose workload and responder this reuses). The real
``web_search_matches`` asset then runs through ``web_search_job`` on a SQLite Dagster instance,
against the local SearXNG-compatible server (``--latency`` per answer, ``--qps`` token bucket),
with runs planned by :func:`plan_ranges_by_work` over :func:`pending_counts` (what the cascade
does). ``--old-plan`` also runs the old chunk-count plan for comparison.

Prints the runs, wall time, live queries, the rate-limit bound (queries / qps) and the excess over
it (target: at most 60 s). Runs execute in process: a daemon-launched run adds its start-up
(about 5 s per run here, see docs/benchmarks.md) on top, once per planned run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402
import web_search_throughput as workload_of  # noqa: E402

from matching_pipeline.core.models import Candidate, Decision  # noqa: E402
from matching_pipeline.defs.stages import STAGE_SPECS, pending_counts, plan_ranges_by_work, plan_runs  # noqa: E402
from matching_pipeline.defs.tags import RANGE_END, RANGE_START  # noqa: E402
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase  # noqa: E402
from matching_pipeline.settings import Settings  # noqa: E402
from tests.servers.search_server import FakeSearch  # noqa: E402

TARGET_EXCESS_S = 60.0


def build(db: ResultsDatabase, chunks: int, pending: int) -> tuple[list[str], pd.DataFrame]:
    """One batch of ``chunks`` full chunks; ``pending`` items spread evenly are left unmatched."""
    catalog, twins, _ = workload_of.workload(pending)
    total = chunks * CHUNK_SIZE
    step = total // pending
    at = {i * step: row for i, row in enumerate(twins.to_dict("records"))}
    filler = {"part_number": None, "manufacturer": None, "gtin": None}
    rows = [at.get(i) or {"item_id": f"f{i:06d}", "description": f"filler part {i}", **filler} for i in range(total)]
    batch = db.add_batch("bench", "items.csv", "sparse", pd.DataFrame(rows))
    items = db.load_chunk_items(batch.chunk_keys)
    first = catalog["catalog_id"].iloc[0]
    enhanced: dict[str, list[Decision]] = {}
    ai: dict[str, list[Decision]] = {}
    for row in items.itertuples():
        if str(row.item_id).startswith("f"):
            enhanced.setdefault(row.chunk_key, []).append(Decision(row.item_id, first, "gtin", 1.0))
            ai.setdefault(row.chunk_key, [])
        else:
            stem = str(row.description)
            candidates = [Candidate(c, 0.9) for c in catalog[catalog["description"].str.startswith(stem + " model")]["catalog_id"]]
            enhanced.setdefault(row.chunk_key, []).append(Decision(row.item_id, None, "fuzzy", 0.0, {}, candidates))
            ai.setdefault(row.chunk_key, []).append(Decision(row.item_id, None, "llm", 0.0, {"choice": "none"}, candidates))
    db.replace_results("enhanced", enhanced, None)
    db.replace_results("ai", ai, None)
    return batch.chunk_keys, catalog


def run_plan(defs: dg.Definitions, instance: dg.DagsterInstance, ranges: list[tuple[str, str]]) -> float:
    job = defs.resolve_job_def(STAGE_SPECS["web_search"].job_name)
    began = time.perf_counter()
    for first, last in ranges:
        result = job.execute_in_process(instance=instance, tags={RANGE_START: first, RANGE_END: last}, raise_on_error=False)
        if not result.success:
            raise SystemExit(f"run {first} .. {last} failed")
    return time.perf_counter() - began


def dagster_floor(chunks: int) -> float:
    """Seconds Dagster alone needs for one run over ``chunks`` partitions of an asset that yields
    one materialization per chunk and does nothing else (planned events at run creation plus one
    stored event per chunk): the part of the stage's time no stage code can remove."""
    floor_partitions = dg.DynamicPartitionsDefinition(name="floor")

    @dg.asset(partitions_def=floor_partitions, output_required=False, backfill_policy=dg.BackfillPolicy.single_run())
    def floor(context):  # noqa: ANN001 - Dagster rejects a string annotation here
        for key in context.partition_keys:
            metadata = {"items": 10, "decided": 0, "nothing_pending": True}
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata)

    keys = [f"k{i:05d}" for i in range(chunks)]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("floor", keys)
        job = dg.Definitions(assets=[floor], jobs=[dg.define_asset_job("floor_job", selection=[floor])]).resolve_job_def("floor_job")
        began = time.perf_counter()
        job.execute_in_process(instance=instance, tags={RANGE_START: keys[0], RANGE_END: keys[-1]})
        return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2174)
    parser.add_argument("--pending", type=int, default=250)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--qps", type=float, default=20.0)
    parser.add_argument("--old-plan", action="store_true", help="also run the old plan (runs of chunks_per_run chunks)")
    args = parser.parse_args()
    print(f"machine: {workload_of.machine()}")
    with tempfile.TemporaryDirectory() as tmp, FakeSearch(latency_s=args.latency, qps_limit=args.qps) as server:
        server.responder = workload_of.responder(args.pending)
        data = Path(tmp)
        database_url = f"sqlite:///{data / 'results.db'}"
        settings = Settings(data_dir=data, inbox_dir=data / "inbox", database_url=database_url, catalog_path=data / "catalog.csv")
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL", "MATCHING_SEARCH_PROVIDER"):
            os.environ.pop(name, None)
        concurrency = max(4, int(args.qps * args.latency * 1.5))
        os.environ.update(SEARXNG_URL=server.url, MATCHING_SEARCH_QPS=str(args.qps), MATCHING_SEARCH_MAX_CONCURRENCY=str(concurrency))
        db = ResultsDatabase(settings.database_url)
        began = time.perf_counter()
        keys, catalog = build(db, args.chunks, args.pending)
        catalog.to_csv(data / "catalog.csv", index=False)
        print(f"built {len(keys)} chunks, {args.pending} pending items in {time.perf_counter() - began:.1f}s", flush=True)
        from matching_pipeline.definitions import build_definitions

        defs = build_definitions(settings)
        defs.resources["catalog_source"].load_index()  # built once per catalog version, as the catalog asset does
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions("chunks", keys)
            planned = time.perf_counter()
            counts = pending_counts(db, "web_search", keys)
            ranges = plan_ranges_by_work(keys, counts, STAGE_SPECS["web_search"].chunks_per_run * CHUNK_SIZE)
            plan_s = time.perf_counter() - planned
            print(f"plan by work: {len(ranges)} run(s) for {sum(counts.values())} pending items ({plan_s:.2f}s to plan)", flush=True)
            before = server.count
            wall = run_plan(defs, instance, ranges) + plan_s
            live = server.statuses()[before:].count(200) if hasattr(server, "statuses") else server.count - before
            old = None
            if args.old_plan:
                db.replace_results("web_search", {k: [] for k in keys}, None)  # forget, keep the query cache warm
                old_ranges = plan_runs(keys, STAGE_SPECS["web_search"].chunks_per_run)
                old = (len(old_ranges), run_plan(defs, instance, old_ranges))
        web = db.stage_results("web_search", keys)
        matched = sum(d.matched for chunk in web.values() for d in chunk.values())
        db.dispose()
    floor_s = dagster_floor(args.chunks)
    bound = live / args.qps
    excess = wall - bound
    print(
        f"[web_search, plan by work] {len(ranges)} run(s)  wall {wall:.1f}s  live queries {live}  "
        f"bound {bound:.1f}s  excess {excess:.1f}s (target <= {TARGET_EXCESS_S:g}s)  matched {matched}"
    )
    print(f"[dagster floor] one no-op run over {args.chunks} partitions, one event each: {floor_s:.1f}s; "
          f"stage time beyond bound + floor: {excess - floor_s:.1f}s; load average {os.getloadavg()[0]:.1f}")
    if old:
        print(f"[web_search, old plan, cached queries] {old[0]} runs  wall {old[1]:.1f}s")
    if excess > TARGET_EXCESS_S:
        print(f"MISSED excess {excess:.1f}s > {TARGET_EXCESS_S:g}s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
