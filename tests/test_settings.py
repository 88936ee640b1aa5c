"""The one settings object: every MATCHING_* variable parsed, validated and named in its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.settings import (
    SAMPLE_DIR,
    Settings,
    SettingsError,
    chunks_per_run,
    current_settings,
    db_retry_seconds,
)


def test_defaults_follow_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path / "data"
    assert settings.inbox_dir == tmp_path / "data" / "inbox"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'results.db'}"
    assert settings.catalog_path == (SAMPLE_DIR / "catalog.csv").resolve()
    assert settings.review == ReviewSettings() and settings.target_precision == 0.99
    assert (settings.item_columns, settings.inbox_require_done, settings.vocabulary_dir) == ({}, False, None)

    monkeypatch.setenv("MATCHING_DATA_DIR", "elsewhere")
    monkeypatch.setenv("MATCHING_INBOX_DIR", "")  # empty counts as unset
    moved = Settings.from_env()
    assert moved.inbox_dir == tmp_path / "elsewhere" / "inbox"
    assert moved.database_url == f"sqlite:///{tmp_path / 'elsewhere' / 'results.db'}"


def test_every_kind_of_value_is_read_from_its_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MATCHING_DATA_DIR": str(tmp_path),
        "MATCHING_DATABASE_URL": "postgresql+psycopg2://u@db:5432/m",
        "MATCHING_ITEM_COLUMNS": "item_id=SKU, description=Item Name",
        "MATCHING_INBOX_REQUIRE_DONE": "yes",
        "MATCHING_INBOX_SETTLE_SECONDS": "2.5",
        "MATCHING_MAX_FIELD_CHARS": "64",
        "MATCHING_REVIEW_CONFIDENCE": "0.9",
        "MATCHING_VOCABULARY_DIR": str(tmp_path / "words"),
        "MATCHING_CHUNKS_PER_RUN_AI": "7",
        "MATCHING_DB_RETRY_SECONDS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert settings.database_url == "postgresql+psycopg2://u@db:5432/m"
    assert settings.item_columns == {"item_id": "SKU", "description": "Item Name"}
    assert settings.inbox_require_done is True and settings.inbox_settle_seconds == 2.5
    assert settings.field_limits.field == 64 and settings.review.confidence == 0.9
    assert settings.vocabulary_dir == tmp_path / "words"
    # The module-level readers (for code that is handed no Settings) see the same values...
    assert (chunks_per_run("ai", 100), chunks_per_run("enhanced", 200), db_retry_seconds()) == (7, 200, 2.0)
    # ...and a changed variable, without a stale cache.
    monkeypatch.setenv("MATCHING_DB_RETRY_SECONDS", "3")
    assert db_retry_seconds() == 3.0 and current_settings().db_retry_seconds == 3.0


def test_every_bad_value_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATCHING_MAX_DESCRIPTION_CHARS", "lots")
    monkeypatch.setenv("MATCHING_INBOX_REQUIRE_DONE", "maybe")
    monkeypatch.setenv("MATCHING_CATALOG_COLUMNS", "catalog_id")
    monkeypatch.setenv("MATCHING_CHUNKS_PER_RUN_ENHANCED", "0")
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    message = str(raised.value)
    assert "MATCHING_MAX_DESCRIPTION_CHARS='lots': Input should be a valid integer" in message
    assert "MATCHING_INBOX_REQUIRE_DONE='maybe'" in message
    assert "MATCHING_CATALOG_COLUMNS='catalog_id'" in message and "not of the form canonical=source" in message
    assert "MATCHING_CHUNKS_PER_RUN_ENHANCED='0': Input should be greater than or equal to 1" in message
    assert isinstance(raised.value, ValueError)


def test_settings_are_frozen_and_a_replaced_copy_is_validated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, catalog_path=tmp_path / "catalog.csv")
    with pytest.raises(ValueError, match="frozen"):
        settings.catalog_encoding = "latin-1"  # type: ignore[misc]
    copy = settings.replace(catalog_encoding="latin-1", item_columns="item_id=SKU")
    assert (copy.catalog_encoding, copy.item_columns, copy.inbox_dir) == ("latin-1", {"item_id": "SKU"}, tmp_path / "inbox")
    assert settings.catalog_encoding == "utf-8"
    with pytest.raises(ValueError, match="target_precision"):
        settings.replace(target_precision=1.5)
    with pytest.raises(ValueError, match="extra"):
        settings.replace(catalog_encodnig="latin-1")
