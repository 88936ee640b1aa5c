"""Throughput of the web-search stage against a slow, rate-limited SearXNG-compatible server.

    python bench/web_search_throughput.py [--items 1000] [--latency 0.3] [--qps 5]

The real Dagster asset ``web_search_matches`` runs over every chunk (as the CLI runs it: runs of
``chunks_per_run`` chunks, blocks of ``chunks_per_block``), after the enhanced and AI stages
(no model configured) have left the items unmatched. The local server
(tests/servers/search_server.py) answers after ``--latency`` seconds and enforces ``--qps`` as a
token bucket answering 429 + Retry-After; the stage is paced to the same qps.

Synthetic catalog: pairs of near-twin entries ("... model HP0123A" / "... HP0123B"), so the
enhanced stage sees two equally good candidates and accepts neither. Items are known by internal
codes; for four items in five the server returns a shop page naming the right model next to the
item's code (one query decides), for the fifth it returns nothing (the description is tried too).

Prints wall time, the bound the limit sets (live queries / qps), their ratio (target <= 1.15),
429s, matches, and a re-run that must make zero queries. Exits non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
import pandas as pd  # noqa: E402

from matching_pipeline.jobs.runner import ensure_partitions, run_stage  # noqa: E402
from matching_pipeline.results.store import ResultsDatabase  # noqa: E402
from matching_pipeline.settings import Settings  # noqa: E402
from tests.servers.search_server import FakeSearch  # noqa: E402

TARGET_RATIO = 1.15
STAGES = ["enhanced", "ai", "web_search"]
BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay"]
NOUNS = ["hydraulic pump", "torque wrench", "bench grinder", "air compressor", "pressure gauge", "drill press"]


def family(k: int) -> tuple[str, str]:
    """Description shared by a pair of twin entries, and the stem of their model numbers."""
    return f"{BRANDS[k % len(BRANDS)]} {NOUNS[k % len(NOUNS)]} range {k}", f"HP{k:04d}"


def workload(items: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    families = max(1, items // 2)
    catalog = pd.DataFrame(
        [
            {"catalog_id": f"E{k:04d}{twin}", "description": f"{family(k)[0]} model {family(k)[1]}{twin}", "part_number": f"{family(k)[1]}{twin}"}
            for k in range(families)
            for twin in "AB"
        ]
    )
    rows, truth = [], {}
    for i in range(items):
        k, twin = i % families, "AB"[(i // families) % 2]
        rows.append({"item_id": f"it{i:06d}", "description": family(k)[0], "part_number": f"INT-{i:06d}", "manufacturer": None, "gtin": None})
        truth[f"it{i:06d}"] = f"E{k:04d}{twin}" if i % 5 else None
    return catalog, pd.DataFrame(rows), truth


def responder(items: int) -> Callable[[str], list[dict[str, str]]]:
    families = max(1, items // 2)

    def answer(query: str) -> list[dict[str, str]]:
        found = re.search(r"INT-(\d{6})", query)
        if not found or int(found.group(1)) % 5 == 0:
            return []
        i = int(found.group(1))
        k, twin = i % families, "AB"[(i // families) % 2]
        description, stem = family(k)
        return [
            {
                "title": f"{description} model {stem}{twin} | Industrial Supply",
                "url": f"https://supply.example.com/p/{stem.lower()}{twin.lower()}",
                "snippet": f"Stock code INT-{i:06d}. {description}, in stock.",
            }
        ]

    return answer


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown CPU",
    )
    return f"{cpus} CPUs, {model}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--qps", type=float, default=5.0)
    args = parser.parse_args()

    catalog, items, truth = workload(args.items)
    print(f"machine: {machine()}")
    print(f"{args.items} items, catalog {len(catalog)} entries; server latency {args.latency}s, limit {args.qps:g} qps", flush=True)
    with tempfile.TemporaryDirectory() as tmp, FakeSearch(latency_s=args.latency, qps_limit=args.qps) as server:
        server.responder = responder(args.items)
        data = Path(tmp)
        catalog.to_csv(data / "catalog.csv", index=False)
        settings = Settings(
            data_dir=data, inbox_dir=data / "inbox", database_url=f"sqlite:///{data / 'results.db'}", catalog_path=data / "catalog.csv"
        )
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL", "MATCHING_SEARCH_PROVIDER"):
            os.environ.pop(name, None)
        os.environ.update(SEARXNG_URL=server.url, MATCHING_SEARCH_QPS=str(args.qps))
        from matching_pipeline.definitions import build_definitions

        defs = build_definitions(settings)
        db = ResultsDatabase(settings.database_url)
        batch = db.add_batch("bench", "items.csv", "bench", items)
        keys = batch.chunk_keys
        with dg.instance_for_test() as instance:
            ensure_partitions(instance, keys)

            def run(stage: str) -> float:
                began = time.perf_counter()
                outcomes = run_stage(defs, instance, stage, keys, job_id="bench", stages=STAGES)
                if not all(o.success for o in outcomes):
                    raise SystemExit(f"{stage} failed: {[o.error for o in outcomes if not o.success]}")
                return time.perf_counter() - began

            for stage in STAGES[:2]:
                print(f"[{stage}] {run(stage):.1f}s", flush=True)
            enhanced = db.stage_results("enhanced", keys)
            unmatched = sum(not d.matched for chunk in enhanced.values() for d in chunk.values())

            wall = run("web_search")
            statuses = server.statuses()
            live = statuses.count(200)
            rerun_before = server.count
            rerun_wall = run("web_search")
            rerun_queries = server.count - rerun_before
        web = db.stage_results("web_search", keys)
        decisions = {d.item_id: d for chunk in web.values() for d in chunk.values()}
        correct = sum(d.catalog_id == truth[i] for i, d in decisions.items())
        matched = sum(d.matched for d in decisions.values())
        db.dispose()

    bound = live / args.qps
    ratio = wall / bound if bound else float("inf")
    print(f"unmatched after enhanced+ai: {unmatched}/{args.items}")
    print(
        f"[web_search] wall {wall:.1f}s  queries {live}  bound {bound:.1f}s (queries/{args.qps:g})  ratio {ratio:.3f}  "
        f"429s {statuses.count(429)}/{len(statuses)}  matched {matched}  correct {correct}/{len(decisions)}"
    )
    print(f"[web_search rerun] {rerun_queries} queries in {rerun_wall:.1f}s")
    checks = {
        f"ratio {ratio:.3f} > {TARGET_RATIO}": ratio > TARGET_RATIO,
        f"rerun made {rerun_queries} queries": rerun_queries > 0,
        f"only {unmatched} of {args.items} items reached the stage unmatched": unmatched != args.items,
        f"{correct} of {len(decisions)} decisions right": correct != len(decisions),
    }
    failed = [what for what, missed in checks.items() if missed]
    for line in failed:
        print(f"MISSED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
