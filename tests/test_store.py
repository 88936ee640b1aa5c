"""The results database on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from matching_pipeline.core.models import Candidate, Decision
from matching_pipeline.results.store import ResultsDatabase, chunk_key, parse_chunk_key


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> ResultsDatabase:
    url = f"sqlite:///{tmp_path / 'results.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_database")
    database = ResultsDatabase(url)
    yield database
    database.dispose()


def items_frame(n: int, prefix: str = "i") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"{prefix}{i}" for i in range(n)],
            "description": [f"thing {i}" for i in range(n)],
            "part_number": [None] * n,
            "manufacturer": [None] * n,
            "gtin": [None] * n,
            "colour": ["red"] * n,
        }
    )


def test_chunk_keys_sort_in_arrival_order_and_name_project_and_batch() -> None:
    keys = [chunk_key(b, "acme", c) for b in (2, 10) for c in (1, 2, 11)]
    assert keys == sorted(keys)
    assert parse_chunk_key("b000010:acme:00011") == (10, "acme", 11)
    assert all("," not in k and "..." not in k for k in keys)


def test_batch_is_cut_into_ten_item_chunks_with_a_short_last_one(db: ResultsDatabase) -> None:
    batch = db.add_batch("acme", "items.csv", "h1", items_frame(23))
    assert batch.is_new and batch.item_count == 23 and batch.chunk_count == 3
    assert batch.chunk_keys == [f"b{batch.id:06d}:acme:0000{i}" for i in (1, 2, 3)]
    loaded = db.load_chunk_items(batch.chunk_keys[2:])
    assert loaded["item_id"].tolist() == ["i20", "i21", "i22"]
    assert loaded.loc[0, "extra"] == {"colour": "red"}


def test_same_content_is_the_same_batch(db: ResultsDatabase) -> None:
    first = db.add_batch("acme", "items.csv", "h1", items_frame(5))
    again = db.add_batch("acme", "copy.csv", "h1", items_frame(5))
    assert again.id == first.id and not again.is_new
    assert len(db.list_batches("acme")) == 1


def test_item_ids_already_in_the_project_are_refused_with_rows(db: ResultsDatabase) -> None:
    db.add_batch("acme", "a.csv", "h1", items_frame(3))
    with pytest.raises(ValueError, match=r"row 1 \('i0'\), row 2 \('i1'\)"):
        db.add_batch("acme", "b.csv", "h2", items_frame(2))
    assert len(db.list_batches()) == 1  # the refused batch left nothing behind
    other = db.add_batch("other", "b.csv", "h2", items_frame(2))
    assert other.is_new


def test_same_content_stored_meanwhile_by_another_process_is_that_batch(
    db: ResultsDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = db.add_batch("acme", "items.csv", "h1", items_frame(5))
    looked = []

    def not_yet_seen(project: str, content_sha256: str):
        # The other process stores the batch between this one's look-up and its insert.
        looked.append(project)
        return None if len(looked) == 1 else ResultsDatabase.find_batch(db, project, content_sha256)

    monkeypatch.setattr(db, "find_batch", not_yet_seen)
    again = db.add_batch("acme", "copy.csv", "h1", items_frame(5))
    assert again.id == first.id and not again.is_new and len(looked) == 2


def test_numpy_values_and_nan_are_stored_as_plain_json(db: ResultsDatabase) -> None:
    frame = items_frame(2).assign(colour=[np.float64("nan"), np.int64(3)])
    batch = db.add_batch("acme", "items.csv", "h1", frame)
    assert db.load_chunk_items(batch.chunk_keys)["extra"].tolist() == [{"colour": None}, {"colour": 3}]
    evidence = {"score": np.float32(0.5), "counts": {np.int64(1): np.int64(2)}, "gap": [np.float64("nan")]}
    db.replace_results("enhanced", {batch.chunk_keys[0]: [Decision("i0", None, "none", 0.5, evidence)]}, "v1")
    stored = db.stage_results("enhanced", batch.chunk_keys)[batch.chunk_keys[0]]["i0"].evidence
    assert stored == {"score": 0.5, "counts": {"1": 2}, "gap": [None]}


def decision(item_id: str, catalog_id: str | None) -> Decision:
    return Decision(item_id, catalog_id, "fuzzy" if catalog_id else "none", 0.9, {"score": float("nan")}, [Candidate("c1", 0.9, "x")])


def test_rewriting_a_chunk_replaces_its_rows(db: ResultsDatabase) -> None:
    batch = db.add_batch("acme", "items.csv", "h1", items_frame(12))
    key = batch.chunk_keys[0]
    ids = [f"i{i}" for i in range(10)]
    db.replace_results("enhanced", {key: [decision(i, "c1") for i in ids]}, "v1")
    db.replace_results("enhanced", {key: [decision(i, None) for i in ids]}, "v1")
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM match_results")).scalar_one() == 10
        assert conn.execute(sa.text("SELECT COUNT(*) FROM match_results WHERE catalog_id IS NOT NULL")).scalar_one() == 0
    results = db.stage_results("enhanced", [key])[key]
    assert results["i0"].candidates == [Candidate("c1", 0.9, "x")]
    assert results["i0"].evidence == {"score": None}
    assert db.finished_chunks("enhanced", batch.chunk_keys) == {key}


def test_final_matches_view_takes_the_latest_stage(db: ResultsDatabase) -> None:
    batch = db.add_batch("acme", "items.csv", "h1", items_frame(3))
    key = batch.chunk_keys[0]
    db.replace_results("enhanced", {key: [decision("i0", "c1"), decision("i1", None), decision("i2", None)]}, "v1")
    db.replace_results("ai", {key: [decision("i1", "c9"), decision("i2", None)]}, "v1")
    final = db.final_matches("acme").set_index("item_id")
    assert final.loc["i0", "stage"] == "enhanced" and final.loc["i0", "catalog_id"] == "c1"
    assert final.loc["i1", "stage"] == "ai" and final.loc["i1", "catalog_id"] == "c9"
    assert final.loc["i2", "stage"] == "ai" and final.loc["i2", "catalog_id"] is None
    summary = db.project_summary("acme")
    assert summary["items"] == 3 and summary["matched"] == 2 and summary["match_rate"] == round(2 / 3, 4)
    assert summary["by_stage"]["enhanced"]["methods"] == {"fuzzy": 1}
    assert summary["by_stage"]["ai"]["matched"] == 1


def test_cache_round_trip(db: ResultsDatabase) -> None:
    db.cache_put("ai", "k1", {"choice": "c1"})
    db.cache_put("ai", "k1", {"choice": "c2"})
    got = db.cache_get("ai", ["k1", "k2"])
    assert list(got) == ["k1"] and got["k1"]["value"] == {"choice": "c2"}
    assert got["k1"]["created_at"].tzinfo is not None


@pytest.mark.postgres
def test_concurrent_first_starts_create_the_schema_once(postgres_database: str) -> None:
    """The webserver, the daemon and the CLI may all open a fresh database at the same moment."""
    import threading

    errors: list[BaseException] = []

    def start() -> None:
        try:
            ResultsDatabase(postgres_database).dispose()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
