"""What a long chunk history costs: the inbox sensor tick, ``status``, and the UI's partition query.

    python bench/partition_history.py [--chunks 200000] [--keep 2000] [--repeat 5]

Three scenarios, each in its own process with its own temporary DAGSTER_HOME (the shipped
dagster.yaml: SQLite storage) and data directory:

  * empty     no history
  * history   ``--chunks`` chunks of history, every key still in the ``chunks`` partition set
  * retired   the same history after retirement (``defs/retention.py``) left ``--keep`` keys

History is results-database rows (batches of 100 chunks, every stage finished) and partition keys;
it has no Dagster materialisation events (one event costs about 50 ms on SQLite here, so 600,000
would take eight hours): the partition query is measured over keys alone. In ``retired`` the
oldest batches are recorded as retired earlier (their keys never added), and one retirement pass
runs for real over ``--keep`` further keys of old finished batches, which gives the deletion rate;
``--keep`` recent keys stay.

In every scenario a "latest" job of 200 items then runs through the three stages in process. The
three scenario processes then stay up and are timed in interleaved rounds (``--repeat`` of them;
medians), so that all three see the same load on a shared machine:

  * tick      ``new_items_sensor`` evaluated with one new five-item file in the inbox
              (``dg.build_sensor_context``)
  * status    ``job_status`` of the latest job, on a fresh ``DagsterInstance`` each time (as the
              ``status`` command has: no per-process cache), instance creation not timed
  * partition the Dagster UI's ``PartitionHealthQuery`` (its asset page's partition bar:
              ``partitionKeysByDimension`` and ``assetPartitionStatuses``) for ``enhanced_matches``,
              over HTTP from a ``dagster-webserver`` started on 127.0.0.1 for the purpose

Targets (issue 12): tick and status within 2x of ``empty``; partition query within 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHUNKS_PER_BATCH = 100
LATEST_ITEMS = 200

PARTITION_HEALTH_QUERY = """
query PartitionHealthQuery($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode {
      id
      partitionKeysByDimension { name type partitionKeys }
      assetPartitionStatuses {
        ... on DefaultPartitionStatuses { materializedPartitions materializingPartitions failedPartitions }
      }
    }
  }
}
"""
"""The query the UI's asset page sends for a one-dimension partitioned asset (dagster-webserver
1.13.27's bundle, ``PartitionHealthQuery``; the time and multi-dimension fragments left out)."""


def _history(db, instance, chunks: int, keep: int, retired_scenario: bool) -> dict[str, float]:
    """Write ``chunks`` chunks of finished history; in the retired scenario, retire as described."""
    from matching_pipeline.core.models import STAGES
    from matching_pipeline.defs.partitions import ensure_chunk_keys
    from matching_pipeline.defs.retention import retire_chunks
    from matching_pipeline.results.retired import record_retired
    from matching_pipeline.results.store import batches, chunk_key, stage_chunks

    n_batches = chunks // CHUNKS_PER_BATCH
    keep_batches = keep // CHUNKS_PER_BATCH
    old = datetime.now(UTC) - timedelta(days=30)
    recent = datetime.now(UTC) - timedelta(days=1)
    first_recent = n_batches - keep_batches + 1  # these stay in every scenario
    first_live_retire = first_recent - keep_batches  # retired by this run, in the retired scenario
    began = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(
            batches.insert(),
            [
                {
                    "id": b,
                    "project": "hist",
                    "source_name": f"hist-{b}.csv",
                    "content_sha256": f"{b:064x}",
                    "item_count": CHUNKS_PER_BATCH * 10,
                    "chunk_count": CHUNKS_PER_BATCH,
                    "created_at": recent if b >= first_recent else old,
                }
                for b in range(1, n_batches + 1)
            ],
        )
        for b0 in range(1, n_batches + 1, 100):
            conn.execute(
                stage_chunks.insert(),
                [
                    {
                        "stage": stage,
                        "chunk_key": chunk_key(b, "hist", i),
                        "decided": 10,
                        "matched": 7,
                        "catalog_version": "bench",
                        "decided_at": recent if b >= first_recent else old,
                    }
                    for b in range(b0, min(b0 + 100, n_batches + 1))
                    for i in range(1, CHUNKS_PER_BATCH + 1)
                    for stage in STAGES
                ],
            )
        # Later batches (the latest job, the sensor's files) get ids after these: max(id) + 1.
    added_from = first_live_retire if retired_scenario else 1
    keys = [chunk_key(b, "hist", i) for b in range(added_from, n_batches + 1) for i in range(1, CHUNKS_PER_BATCH + 1)]
    ensure_chunk_keys(instance, keys)
    out = {"history_write_s": time.perf_counter() - began}
    if retired_scenario:
        record_retired(db, range(1, first_live_retire), when=old + timedelta(days=8))
        began = time.perf_counter()
        report = retire_chunks(instance, db, days=7)
        out["retire_s"] = time.perf_counter() - began
        out["retired_keys"] = report.keys_removed
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, variables: dict) -> dict:
    body = json.dumps({"query": PARTITION_HEALTH_QUERY, "variables": variables}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


class Webserver:
    """``dagster-webserver`` for this scenario's instance, on 127.0.0.1, for the UI's query."""

    def __init__(self, env: dict[str, str], workdir: Path):
        self.port = _free_port()
        self.log = open(workdir / "webserver.log", "w")  # noqa: SIM115 - open while the server runs; close() closes it
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "matching_pipeline.definitions",
             "-h", "127.0.0.1", "-p", str(self.port)],
            env=env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=5).read()
                break
            except OSError as exc:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"dagster-webserver did not start: see {workdir / 'webserver.log'}") from exc
                time.sleep(1)

    def partition_keys(self) -> int:
        data = _graphql(self.port, {"assetKey": {"path": ["enhanced_matches"]}})["data"]
        return len(data["assetNodeOrError"]["partitionKeysByDimension"][0]["partitionKeys"])

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def scenario(name: str, chunks: int, keep: int) -> None:
    """Runs in a child process whose environment points at fresh directories: sets the scenario
    up, prints one JSON line, then times what the parent asks on stdin (``tick``, ``status``,
    ``partition``), one JSON line per answer, so the parent can interleave the scenarios."""
    import warnings

    warnings.filterwarnings("ignore")
    import dagster as dg
    import pandas as pd

    from matching_pipeline.core.models import STAGES
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.defs.partitions import chunk_partitions
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.defs.sensors import new_items_sensor
    from matching_pipeline.jobs.runner import ensure_partitions, run_stage
    from matching_pipeline.jobs.status import job_status
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.settings import Settings

    settings = Settings.from_env()
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.get()
    db = open_results_database(settings.database_url)
    out: dict = {"scenario": name}
    if name != "empty":
        out.update(_history(db, instance, chunks, keep, retired_scenario=name == "retired"))

    sample = pd.read_csv(Path(os.environ["BENCH_SAMPLE_ITEMS"]), dtype=str, keep_default_na=False)
    path = settings.data_dir / "latest.csv"
    sample.head(LATEST_ITEMS).to_csv(path, index=False)
    batch = ingest_file(db, path, "acme")
    ensure_partitions(instance, batch.chunk_keys)
    for stage in STAGES:
        outcomes = run_stage(defs, instance, stage, batch.chunk_keys, job_id="latest", stages=list(STAGES), say=lambda _: None)
        assert all(o.success for o in outcomes), outcomes
    out["keys"] = len(instance.get_dynamic_partitions(chunk_partitions.name))

    resources = {k: defs.resources[k] for k in ("results", "inbox")}
    drops = iter(range(10_000))

    def tick() -> None:
        n = next(drops)
        folder = settings.inbox_dir / "inbox-bench"
        folder.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"item_id": [f"T{n}-{i}" for i in range(5)], "description": [f"bench item {n} {i}" for i in range(5)]})
        frame.to_csv(folder / f"drop-{n}.csv", index=False)
        result = new_items_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1, result

    def status() -> None:
        view = job_status(fresh, "latest")
        assert view["status"] == "completed" and view["totalItems"] == LATEST_ITEMS, view

    server = Webserver(dict(os.environ), settings.data_dir)
    try:
        tick()  # warm: imports and first connections, as a running daemon has them
        out["partition_keys"] = server.partition_keys()  # loads the asset graph once
        print(json.dumps(out), flush=True)
        actions = {"tick": tick, "status": status, "partition": server.partition_keys}
        for line in sys.stdin:
            what = line.strip()
            if what == "quit":
                break
            # A fresh instance for each ``status``, as each command has (the view caches per
            # instance object); made before the clock starts, so the figure is the view's reads.
            fresh = dg.DagsterInstance.get() if what == "status" else None
            began = time.perf_counter()
            actions[what]()
            print(json.dumps({"s": time.perf_counter() - began}), flush=True)
    finally:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=200_000)
    parser.add_argument("--keep", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        scenario(args.scenario, args.chunks, args.keep)
        return 0

    from matching_pipeline.sample.generator import write_sample

    names = ("empty", "history", "retired")
    children: dict[str, subprocess.Popen] = {}
    setup: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="partition-history-") as tmp:
        sample = write_sample(Path(tmp) / "sample", n_catalog=2_000, n_items=LATEST_ITEMS, seed=5)
        try:
            for name in names:  # one at a time: setting up is what loads the machine
                root = Path(tmp) / name
                home = root / "dagster_home"
                home.mkdir(parents=True)
                shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
                env = {k: v for k, v in os.environ.items() if not k.startswith(("MATCHING_", "DAGSTER_", "OPENAI_", "SEARXNG_", "BRAVE_"))}
                env.update(
                    DAGSTER_HOME=str(home),
                    MATCHING_DATA_DIR=str(root / "data"),
                    MATCHING_CATALOG_PATH=str(sample["catalog"]),
                    MATCHING_INBOX_SETTLE_SECONDS="0",
                    BENCH_SAMPLE_ITEMS=str(sample["items"]),
                )
                command = [sys.executable, __file__, "--scenario", name, "--chunks", str(args.chunks), "--keep", str(args.keep)]
                with open(root / "child.err", "w") as errors:  # the child holds its own copy of the descriptor
                    child = subprocess.Popen(command, env=env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=errors, text=True)
                children[name] = child
                line = child.stdout.readline()
                if not line:
                    print((root / "child.err").read_text()[-4000:], file=sys.stderr)
                    return 1
                setup[name] = json.loads(line)
                print(json.dumps(setup[name]), flush=True)
            # Interleaved rounds: every scenario is timed under the same load, which on a shared
            # machine drifts by more than the effects measured.
            times: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeat):
                for what in ("tick", "status", "partition"):
                    for name in names:
                        children[name].stdin.write(what + "\n")
                        children[name].stdin.flush()
                        times.setdefault((name, what), []).append(json.loads(children[name].stdout.readline())["s"])
        finally:
            for child in children.values():
                if child.poll() is None:
                    try:
                        child.stdin.write("quit\n")
                        child.stdin.flush()
                    except OSError:
                        pass
                    child.wait(60)
    med = {key: statistics.median(values) for key, values in times.items()}
    print(json.dumps({f"{n}.{w}": round(v, 4) for (n, w), v in med.items()}))
    print(f"\n{'scenario':<9} {'keys':>8} {'tick s':>8} {'x':>6} {'status s':>9} {'x':>6} {'partition s':>12}")
    for name in names:
        tick, status = med[(name, "tick")], med[(name, "status")]
        print(
            f"{name:<9} {setup[name]['keys']:>8} {tick:>8.3f} {tick / med[('empty', 'tick')]:>6.2f} "
            f"{status:>9.3f} {status / med[('empty', 'status')]:>6.2f} {med[(name, 'partition')]:>12.3f}"
        )
    retired = setup["retired"]
    if retired.get("retired_keys"):
        print(f"\nretirement pass: {retired['retired_keys']} keys in {retired['retire_s']:.1f} s "
              f"({1000 * retired['retire_s'] / retired['retired_keys']:.1f} ms per key)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
