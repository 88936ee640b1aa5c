"""Shared-nothing workers against a real S3 endpoint (moto's server on 127.0.0.1: the ``s3`` fixture of conftest.py).

The object-store inbox sensor, the catalog index shared through the store, and several worker
processes, each on its own empty data directory, splitting one enhanced-stage job while sharing
only Postgres and the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.clients.object_store import open_store, publish_file
from matching_pipeline.defs import resources as resources_module
from matching_pipeline.defs.object_inbox import object_inbox_sensor
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.resources import CatalogResource, open_results_database
from matching_pipeline.settings import Settings
from tests.servers.s3_server import LocalS3

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "bench" / "shared_nothing.py"


@pytest.fixture(autouse=True)
def _fresh_index_memory() -> Iterator[None]:
    """Each test's "worker" starts without the index in memory, as a new process would."""
    resources_module._loaded_indexes.clear()
    yield
    resources_module._loaded_indexes.clear()


def _object_settings(tmp_path: Path, s3: LocalS3, catalog: Path) -> Settings:
    data = tmp_path / "data"
    return Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'results.db'}",
        catalog_path=catalog,
        inbox_url=s3.url("inbox"),
        index_url=s3.url("index"),
        s3_endpoint_url=s3.endpoint_url,
        inbox_settle_seconds=0,
    )


def test_object_inbox_sensor_stores_rejects_and_ignores_like_the_local_inbox(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path], instance: dg.DagsterInstance, monkeypatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    from matching_pipeline.definitions import build_definitions

    settings = _object_settings(tmp_path, s3, generated_sample["catalog"])
    (settings.data_dir).mkdir(parents=True)
    defs = build_definitions(settings)
    fs, root = open_store(s3.url("inbox"), s3.endpoint_url)
    good = generated_sample["items"].read_bytes()
    fs.pipe_file(f"{root}/acme/items.csv", good)
    fs.pipe_file(f"{root}/acme/bad.csv", b"sku,title\n1,no description column\n")
    fs.pipe_file(f"{root}/acme/upload.csv.part", good)  # still being written: never read
    fs.pipe_file(f"{root}/acme/.hidden.csv", good)

    context = dg.build_sensor_context(instance=instance, resources={k: defs.resources[k] for k in ("results", "inbox")})
    result = object_inbox_sensor(context)

    assert isinstance(result, dg.SensorResult)
    keys = list(result.dynamic_partitions_requests[0].partition_keys)
    items = len(pd.read_csv(generated_sample["items"]))
    assert len(keys) == -(-items // 10) and all(":acme:" in k for k in keys)
    assert result.run_requests and result.run_requests[0].job_name == "enhanced_job"
    db = open_results_database(settings.database_url)
    [batch] = db.list_batches("acme")
    assert batch.item_count == items and batch.source_name == "items.csv"

    fs.invalidate_cache()
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{root}/acme"))
    assert left == [".hidden.csv", "upload.csv.part"]
    [processed] = fs.find(f"{root}/processed/acme")
    assert processed.endswith(f"{batch.label}-items.csv") and fs.cat_file(processed) == good
    rejected = sorted(fs.find(f"{root}/rejected/acme"))
    assert len(rejected) == 2 and rejected[0].endswith("-bad.csv") and rejected[1] == rejected[0] + ".reason.txt"
    reason = fs.cat_file(rejected[1]).decode()
    assert "description" in reason and "matching-inbox-" not in reason  # names the object, not the temp copy
    assert f"{root}/acme/bad.csv" in reason

    # The same content again is a duplicate: archived as such, no new batch, no new chunks.
    fs.pipe_file(f"{root}/acme/again.csv", good)
    again = object_inbox_sensor(
        dg.build_sensor_context(instance=instance, cursor=context.cursor, resources={k: defs.resources[k] for k in ("results", "inbox")})
    )
    assert isinstance(again, dg.SkipReason) and len(db.list_batches("acme")) == 1
    fs.invalidate_cache()
    assert any(p.endswith(f"{batch.label}.duplicate-again.csv") for p in fs.find(f"{root}/processed/acme"))


def test_object_inbox_waits_for_an_object_to_settle_or_its_done_marker(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path]
) -> None:
    from matching_pipeline.results.ingest import InboxRules
    from matching_pipeline.results.object_inbox import scan_object_inbox

    db = open_results_database(f"sqlite:///{tmp_path / 'results.db'}")
    fs, root = open_store(s3.url("inbox"), s3.endpoint_url)
    data = generated_sample["items"].read_bytes()
    fs.pipe_file(f"{root}/p1/a.csv", data[: len(data) // 2])  # a writer that uploads in steps

    settle, done = InboxRules(settle_seconds=30), InboxRules(require_done=True)
    first = scan_object_inbox(db, fs, root, rules=settle, now=1000.0)
    assert not first.outcomes and first.waiting == ["p1/a.csv"]
    fs.pipe_file(f"{root}/p1/a.csv", data)  # rewritten: new size and ETag, the clock restarts
    second = scan_object_inbox(db, fs, root, rules=settle, seen=first.seen, now=1040.0)
    assert not second.outcomes
    third = scan_object_inbox(db, fs, root, rules=settle, seen=second.seen, now=1071.0)
    assert [o.batch.item_count for o in third.outcomes] == [len(pd.read_csv(generated_sample["items"]))]

    # require_done: nothing without its marker; the marker makes it ready at once and goes with it.
    fs.pipe_file(f"{root}/p2/b.csv", data)
    assert not scan_object_inbox(db, fs, root, rules=done).outcomes
    fs.pipe_file(f"{root}/p2/b.csv.done", b"")
    [taken] = scan_object_inbox(db, fs, root, rules=done).outcomes
    assert taken.batch is not None and taken.batch.is_new
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/p2/b.csv.done") and not fs.exists(f"{root}/p2/b.csv")


def test_index_is_published_once_and_loaded_by_a_worker_with_an_empty_disk(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path]
) -> None:
    def worker(name: str) -> CatalogResource:
        return CatalogResource(
            path=str(generated_sample["catalog"]),
            index_dir=str(tmp_path / name / "catalog_index"),
            index_url=s3.url("index"),
            s3_endpoint_url=s3.endpoint_url,
        )

    first = worker("w1")
    index, built = first.load_index()
    assert built
    fs, root = open_store(s3.url("index"), s3.endpoint_url)
    key = f"{root}/catalog-{index.version}.pkl"
    assert fs.find(root) == [key]  # published under its version, no temporary key left behind
    assert first.index_location(index.version) == f"{s3.url('index')}/catalog-{index.version}.pkl"

    resources_module._loaded_indexes.clear()  # a new process
    second = worker("w2")
    assert not (tmp_path / "w2").exists()
    again, built_again = second.load_index()
    assert not built_again and again.version == index.version and len(again) == len(index)
    assert (tmp_path / "w2" / "catalog_index" / key.rsplit("/", 1)[-1]).exists()  # its own cache now

    # A damaged shared copy is never used: the reader sees it is not the version, rebuilds, replaces it.
    fs.pipe_file(key, b"not an index")
    resources_module._loaded_indexes.clear()
    repaired, rebuilt = worker("w3").load_index()
    assert rebuilt and repaired.version == index.version
    fs.invalidate_cache()
    assert fs.cat_file(key) != b"not an index" and fs.find(root) == [key]


def test_racing_publishers_leave_one_whole_object(tmp_path: Path, s3: LocalS3) -> None:
    """put-if-absent through a temporary key: the loser of the race does not overwrite, and no
    temporary object is left."""
    fs, root = open_store(s3.url("race"), s3.endpoint_url)
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"A" * 1000)
    b.write_bytes(b"B" * 1000)
    assert publish_file(fs, str(a), f"{root}/x.pkl") is True
    assert publish_file(fs, str(b), f"{root}/x.pkl") is False
    fs.invalidate_cache()
    assert fs.cat_file(f"{root}/x.pkl") == b"A" * 1000 and fs.find(root) == [f"{root}/x.pkl"]


@pytest.mark.postgres
@pytest.mark.slow
def test_two_shared_nothing_workers_split_a_job_and_decide_every_chunk_once(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path], postgres_database: str, monkeypatch
) -> None:
    """Two worker processes, each with its own empty data dir and DAGSTER_HOME, run the enhanced
    stage over the two halves of a batch that arrived in the object-store inbox. They share the
    Postgres server (Dagster storage and results) and the S3 endpoint, nothing else; neither has
    the catalog index, so they race to build and publish it."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    from matching_pipeline.definitions import build_definitions

    settings = _object_settings(tmp_path, s3, generated_sample["catalog"]).replace(database_url=postgres_database)
    defs = build_definitions(settings)
    fs, root = open_store(s3.url("inbox"), s3.endpoint_url)
    fs.pipe_file(f"{root}/acme/items.csv", generated_sample["items"].read_bytes())
    storage = {"storage": {"postgres": {"postgres_url": postgres_database}}}
    with dg.instance_for_test(overrides=storage) as instance:
        context = dg.build_sensor_context(instance=instance, resources={k: defs.resources[k] for k in ("results", "inbox")})
        result = object_inbox_sensor(context)
        assert isinstance(result, dg.SensorResult)
        keys = list(result.dynamic_partitions_requests[0].partition_keys)
        instance.add_dynamic_partitions(chunk_partitions.name, keys)

        half = len(keys) // 2
        ranges = [(keys[0], keys[half - 1]), (keys[half], keys[-1])]
        workers = [
            _start_worker(tmp_path / f"worker{i}", s3, postgres_database, generated_sample["catalog"], first, last)
            for i, (first, last) in enumerate(ranges)
        ]
        reports = [_finish(worker) for worker in workers]
        assert all(r["runs_ok"] and r["runs"] >= 1 for r in reports)

        # Every chunk materialised exactly once, by one of the two workers.
        per_chunk = Counter()
        for key in keys:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey("enhanced_matches"), asset_partitions=[key]), limit=10
            ).records
            per_chunk[key] = len(records)
        assert set(per_chunk.values()) == {1}

    items = pd.read_csv(generated_sample["items"])
    with sa.create_engine(postgres_database).connect() as conn:
        rows = pd.read_sql(sa.text("SELECT item_id, chunk_key FROM match_results WHERE stage = 'enhanced'"), conn)
        chunks = pd.read_sql(sa.text("SELECT chunk_key FROM stage_chunks WHERE stage = 'enhanced'"), conn)
    assert sorted(rows["item_id"].astype(str)) == sorted(items["item_id"].astype(str))  # none lost, none twice
    assert sorted(chunks["chunk_key"]) == sorted(keys)
    assert set(rows["chunk_key"]) == set(keys)

    # Shared nothing: each worker's disk holds only its own cache of the index, downloaded or built.
    index_objects = [p for p in open_store(s3.url("index"), s3.endpoint_url)[0].find(s3.url("index")) if ".tmp-" not in p]
    assert len(index_objects) == 1
    for i in range(2):
        data_dir = tmp_path / f"worker{i}" / "data"
        assert sorted(p.name for p in data_dir.rglob("*") if p.is_file()) == [index_objects[0].rsplit("/", 1)[-1]]


def _start_worker(home: Path, s3: LocalS3, database_url: str, catalog: Path, first: str, last: str) -> subprocess.Popen:
    """A worker as a run pod would be: its own empty data dir and DAGSTER_HOME (Postgres storage),
    the catalog file as part of its image, the store's endpoint and credentials."""
    (home / "dagster_home").mkdir(parents=True)
    (home / "image").mkdir()
    shutil.copy(catalog, home / "image" / "catalog.csv")
    (home / "dagster_home" / "dagster.yaml").write_text(
        f"storage:\n  postgres:\n    postgres_url: {database_url}\n", encoding="utf-8"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MATCHING_")},
        **s3.env(),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "MATCHING_DATA_DIR": str(home / "data"),
        "MATCHING_DATABASE_URL": database_url,
        "MATCHING_CATALOG_PATH": str(home / "image" / "catalog.csv"),
        "MATCHING_INDEX_URL": s3.url("index"),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), "worker", "--first", first, "--last", last],
        env=env,
        cwd=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(worker: subprocess.Popen) -> dict:
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])
