"""The catalog at a URL (``MATCHING_CATALOG_PATH=s3://...``), for run pods that start on an empty disk.

Against moto's S3 server on 127.0.0.1 (the ``s3`` fixture): the catalog is read from the store with
the same reading options as a local file, indexed, and matched against; its version is the content
hash, taken cheaply (one metadata request) while the object's ETag and size hold; a missing object
is an error naming the URL and never the credentials a URL may carry.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.clients.object_store import open_store, redact
from matching_pipeline.defs import resources as resources_module
from matching_pipeline.defs.resources import CatalogResource, open_results_database
from matching_pipeline.defs.sensors import catalog_sensor
from matching_pipeline.jobs.runner import ensure_partitions, materialize_catalog, run_stage
from matching_pipeline.results.ingest import ingest_file
from matching_pipeline.settings import Settings
from tests.servers.s3_server import LocalS3


def _upload(s3: LocalS3, key: str, data: bytes) -> str:
    fs, root = open_store(s3.url(), s3.endpoint_url)
    fs.pipe_file(f"{root}/{key}", data)
    return s3.url(key)


def _own_columns(catalog_csv: Path) -> bytes:
    """The sample catalog as a customer's export: its own id column name, Latin-1 bytes, an accented title."""
    frame = pd.read_csv(catalog_csv, dtype=str, keep_default_na=False)
    frame.loc[0, "description"] = frame.loc[0, "description"] + " (édition spéciale)"
    buffer = io.StringIO()
    frame.rename(columns={"catalog_id": "SKU"}).to_csv(buffer, index=False)
    return buffer.getvalue().encode("latin-1")


def _counting_downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every catalog download the resource makes, by location."""
    downloads: list[str] = []
    real: Callable[[str, str], bytes] = resources_module.read_object

    def counted(location: str, endpoint_url: str = "") -> bytes:
        downloads.append(location)
        return real(location, endpoint_url)

    monkeypatch.setattr(resources_module, "read_object", counted)
    return downloads


def test_catalog_in_object_storage_is_indexed_and_matched_against(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path], instance: dg.DagsterInstance
) -> None:
    from matching_pipeline.definitions import build_definitions

    url = _upload(s3, "reference/catalog.csv", _own_columns(generated_sample["catalog"]))
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'results.db'}",
        catalog_path=url,
        catalog_encoding="latin-1",
        catalog_columns="catalog_id=SKU",
        s3_endpoint_url=s3.endpoint_url,
    )
    assert settings.catalog_path == url  # a URL is kept as given, not turned into a local path
    data.mkdir(parents=True)
    defs = build_definitions(settings)
    source = defs.resources["catalog_source"]
    assert isinstance(source, CatalogResource)

    result = materialize_catalog(defs, instance)
    [materialization] = result.asset_materializations_for_node("catalog")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["source"] == url and metadata["built_now"] is True
    assert metadata["catalog_version"] == source.version()
    expected = pd.read_csv(generated_sample["catalog"], dtype=str)
    assert metadata["entries"] == len(expected)
    frame = source.load_frame()  # the column map and the encoding applied as to a local file
    assert list(frame["catalog_id"]) == list(expected["catalog_id"])
    assert frame.loc[0, "description"].endswith("(édition spéciale)")

    db = open_results_database(settings.database_url)
    batch = ingest_file(db, generated_sample["items"], "acme", read=settings.item_read_options)
    ensure_partitions(instance, batch.chunk_keys)
    outcomes = run_stage(defs, instance, "enhanced", batch.chunk_keys, job_id="j1", stages=["enhanced"], say=lambda _: None)
    assert outcomes and all(o.success for o in outcomes)

    with db.engine.connect() as conn:
        rows = pd.read_sql(
            sa.text("SELECT item_id, catalog_id, catalog_version FROM match_results WHERE stage = 'enhanced'"), conn
        )
    truth = pd.read_csv(generated_sample["truth"], dtype=str, keep_default_na=False)
    assert sorted(rows["item_id"]) == sorted(truth["item_id"])
    assert set(rows["catalog_version"]) == {source.version()}
    decided = rows.dropna(subset=["catalog_id"]).merge(truth, on="item_id", suffixes=("", "_true"))
    assert set(decided["catalog_id"]) <= set(expected["catalog_id"])
    correct = (decided["catalog_id"] == decided["catalog_id_true"]).sum()
    assert len(decided) >= 60 and correct / len(decided) >= 0.95, (len(decided), correct)
    # Nothing of the catalog on this worker's disk but the index built from it.
    assert not [p for p in data.rglob("*.csv")]


def test_version_follows_the_content_and_an_unchanged_object_is_not_downloaded_again(
    tmp_path: Path, s3: LocalS3, generated_sample: dict[str, Path], instance: dg.DagsterInstance, monkeypatch
) -> None:
    original = generated_sample["catalog"].read_bytes()
    url = _upload(s3, "versions/catalog.csv", original)
    source = CatalogResource(path=url, index_dir=str(tmp_path / "index"), s3_endpoint_url=s3.endpoint_url)
    downloads = _counting_downloads(monkeypatch)

    first = source.version()
    assert re.fullmatch(r"[0-9a-f]{16}", first) and downloads == [url]
    # The sensor's ticks while nothing changed: one HEAD request each, no download.
    tick = catalog_sensor(dg.build_sensor_context(instance=instance, resources={"catalog_source": source}))
    assert isinstance(tick, dg.SensorResult) and len(tick.run_requests) == 1 and tick.cursor == first
    again = catalog_sensor(dg.build_sensor_context(instance=instance, cursor=tick.cursor, resources={"catalog_source": source}))
    assert isinstance(again, dg.SkipReason) and downloads == [url]

    # The same bytes uploaded again: the same version (same ETag and size: not even downloaded).
    _upload(s3, "versions/catalog.csv", original)
    assert source.version() == first and downloads == [url]

    # New content: a new version and a new run, after exactly one download.
    changed = original + b"ZZ-NEW-1,Brand new test entry 9000,,,,,\n"
    _upload(s3, "versions/catalog.csv", changed)
    second = source.version()
    assert second != first and downloads == [url, url]
    tick = catalog_sensor(dg.build_sensor_context(instance=instance, cursor=first, resources={"catalog_source": source}))
    assert isinstance(tick, dg.SensorResult) and tick.cursor == second and len(tick.run_requests) == 1
    assert len(downloads) == 2
    # Back to the first content: the first version again, as a hash of content must.
    _upload(s3, "versions/catalog.csv", original)
    assert source.version() == first

    # The index is named by that version, and built from what was read.
    monkeypatch.setattr(resources_module, "_loaded_indexes", {})  # as a new process: none in memory
    index, built = source.load_index()
    assert built and index.version == first and len(index) == len(pd.read_csv(generated_sample["catalog"]))


def test_a_new_stamp_on_identical_content_keeps_the_version(tmp_path: Path, generated_sample: dict[str, Path], monkeypatch) -> None:
    """A file:// URL rewritten with the same bytes has a new mtime (a multipart re-upload to S3 has a
    new ETag): one download to hash it, and the version is unchanged."""
    path = tmp_path / "shared" / "catalog.csv"
    path.parent.mkdir()
    path.write_bytes(generated_sample["catalog"].read_bytes())
    url = path.as_uri()
    source = CatalogResource(path=url, index_dir=str(tmp_path / "index"))
    downloads = _counting_downloads(monkeypatch)
    first = source.version()
    assert source.version() == first and len(downloads) == 1
    replacement = tmp_path / "shared" / "catalog.csv.new"
    replacement.write_bytes(path.read_bytes())
    replacement.replace(path)  # how a sync tool replaces a file: a new inode, a new mtime
    assert source.version() == first and len(downloads) == 2


def test_a_missing_object_is_an_error_naming_the_url_and_no_credential(
    tmp_path: Path, s3: LocalS3, monkeypatch, capsys
) -> None:
    url = s3.url("reference/missing.csv")
    source = CatalogResource(path=url, index_dir=str(tmp_path / "index"), s3_endpoint_url=s3.endpoint_url)
    with pytest.raises(FileNotFoundError, match=re.escape(f"{url}: no such file or object")):
        source.version()
    with pytest.raises(FileNotFoundError, match=re.escape(url)):
        source.load_index()
    assert not (tmp_path / "index").exists()

    # The catalog sensor's tick fails with the same message (Dagster shows it on the tick).
    with pytest.raises(FileNotFoundError, match=re.escape(url)):
        catalog_sensor(dg.build_sensor_context(resources={"catalog_source": source}))

    # A URL carrying a credential (user info, a signed query): named without it.
    secret_url = url.replace("s3://", "s3://someone:hunter2@") + "?X-Amz-Signature=deadbeef"
    assert redact(secret_url) == url
    leaky = CatalogResource(path=secret_url, index_dir=str(tmp_path / "index"), s3_endpoint_url=s3.endpoint_url)
    with pytest.raises(OSError) as raised:
        leaky.version()
    message = str(raised.value)
    assert message.startswith(url) and "hunter2" not in message and "deadbeef" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__

    # The command line refuses such a catalog before storing any item, naming it.
    from matching_pipeline.cli import EXIT_BAD_INPUT, main

    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MATCHING_S3_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    items = tmp_path / "items.csv"
    items.write_text("item_id,description\n1,a thing\n", encoding="utf-8")
    assert main(["match", "--project", "demo", "--items", str(items), "--catalog", url]) == EXIT_BAD_INPUT
    assert f"{url}: no such file or object" in capsys.readouterr().err
    assert not (tmp_path / "data" / "results.db").exists()


def test_a_catalog_path_stays_a_local_path() -> None:
    settings = Settings(catalog_path="relative/catalog.csv", data_dir="d")
    assert settings.catalog_path == str(Path("relative/catalog.csv").resolve())
    assert Settings(catalog_path="file:///srv/catalog.csv", data_dir="d").catalog_path == "file:///srv/catalog.csv"
