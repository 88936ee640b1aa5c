"""The one settings object: every MATCHING_* variable parsed, validated and named in its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.settings import (
    SAMPLE_DIR,
    SECRET_VARIABLES,
    Settings,
    SettingsError,
    chunks_per_run,
    current_settings,
    db_retry_seconds,
    env_name,
    secret,
)


def test_defaults_follow_the_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env()
    assert settings.data_dir == tmp_path / "data"
    assert settings.inbox_dir == tmp_path / "data" / "inbox"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'results.db'}"
    assert settings.catalog_path == str((SAMPLE_DIR / "catalog.csv").resolve())
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


# -- the stages', notifications' and schedules' settings ----------------------------------------


def test_resource_notification_and_schedule_settings_are_read_from_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "MATCHING_AI_MODEL": "local-model",
        "MATCHING_AI_ITEMS_PER_REQUEST": "item",
        "MATCHING_AI_REFRESH_CACHE": "true",
        "MATCHING_AI_SCORE_BAND": "1",
        "MATCHING_SEARCH_PROVIDER": "brave",
        "MATCHING_SEARCH_QPS": "200",
        "BRAVE_SEARCH_BASE_URL": "http://127.0.0.1:9",
        "MATCHING_WEBHOOK_ATTEMPTS": "2",
        "MATCHING_WEBHOOK_WAIT_MAX": "0.5",
        "MATCHING_NOTIFY_INTERVAL_SECONDS": "5",
        "MATCHING_REPAIR_CRON": "15 1 * * 1-5",
        "MATCHING_CATALOG_RERUN_CRON": "@daily",
        "MATCHING_SCHEDULE_TIMEZONE": "Europe/Berlin",
        "MATCHING_REPAIR_LOOKBACK_DAYS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    assert (settings.ai_model, settings.ai_items_per_request, settings.ai_refresh_cache, settings.ai_score_band) == (
        "local-model", "item", True, 1.0
    )
    assert (settings.search_provider, settings.search_qps, settings.brave_search_base_url) == ("brave", 200.0, "http://127.0.0.1:9")
    assert (settings.webhook_attempts, settings.webhook_wait_max, settings.notify_interval_seconds) == (2, 0.5, 5)
    assert (settings.repair_cron, settings.catalog_rerun_cron) == ("15 1 * * 1-5", "@daily")
    assert (settings.schedule_timezone, settings.repair_lookback_days) == ("Europe/Berlin", 3)
    # The one variable without the MATCHING_ prefix is named by its own name, and a change of it
    # is seen by current_settings() like a change of any MATCHING_ variable.
    assert env_name("brave_search_base_url") == "BRAVE_SEARCH_BASE_URL" and env_name("search_qps") == "MATCHING_SEARCH_QPS"
    assert current_settings().brave_search_base_url == "http://127.0.0.1:9"
    monkeypatch.setenv("BRAVE_SEARCH_BASE_URL", "http://127.0.0.1:10")
    assert current_settings().brave_search_base_url == "http://127.0.0.1:10"


@pytest.mark.parametrize(
    "name,value,expected",
    [
        ("MATCHING_REPAIR_CRON", "every night", "not a cron expression Dagster accepts"),
        ("MATCHING_REPAIR_CRON", "0 2 * *", "not a cron expression Dagster accepts"),
        ("MATCHING_CATALOG_RERUN_CRON", "61 3 * * *", "not a cron expression Dagster accepts"),
        ("MATCHING_SCHEDULE_TIMEZONE", "Mars/Olympus_Mons", "not an IANA timezone name"),
        ("MATCHING_SCHEDULE_TIMEZONE", "../etc/passwd", "not an IANA timezone name"),
        ("MATCHING_REPAIR_LOOKBACK_DAYS", "a week", "Input should be a valid integer"),
        ("MATCHING_WEBHOOK_ATTEMPTS", "four", "Input should be a valid integer"),
        ("MATCHING_WEBHOOK_ATTEMPTS", "0", "Input should be greater than or equal to 1"),
        ("MATCHING_WEBHOOK_WAIT_MAX", "8s", "Input should be a valid number"),
        ("MATCHING_NOTIFY_INTERVAL_SECONDS", "half a minute", "Input should be a valid integer"),
        ("MATCHING_SEARCH_PROVIDER", "bing", "Input should be 'searxng' or 'brave'"),
        ("MATCHING_SEARCH_QPS", "0", "Input should be greater than 0"),
        ("MATCHING_SEARCH_RESULTS", "many", "Input should be a valid integer"),
        ("MATCHING_AI_ITEMS_PER_REQUEST", "batch", "Input should be 'item' or 'chunk'"),
        ("MATCHING_AI_MAX_CONCURRENCY", "lots", "Input should be a valid integer"),
        ("MATCHING_AI_REFRESH_CACHE", "sometimes", "Input should be a valid boolean"),
        ("MATCHING_AI_PRICE_INPUT_PER_1M", "-1", "Input should be greater than or equal to 0"),
    ],
)
def test_a_bad_resource_notification_or_schedule_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env()
    assert f"{name}={value!r}: " in str(raised.value) and expected in str(raised.value)


def test_the_resources_take_their_settings_and_their_secrets_only_as_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    from matching_pipeline.defs.openai_resource import OpenAIResource
    from matching_pipeline.defs.search_resource import SearchResource

    # Unset, the settings' defaults are the resources' own.
    assert OpenAIResource.from_env() == OpenAIResource() and SearchResource.from_env() == SearchResource()
    monkeypatch.setenv("MATCHING_AI_TOP_K", "4")
    monkeypatch.setenv("MATCHING_SEARCH_MAX_RETRIES", "0")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:password@127.0.0.1:9/v1")
    monkeypatch.setenv("BRAVE_SEARCH_API_KEY", "brave-key")
    openai, search = OpenAIResource.from_env(), SearchResource.from_env()
    assert (openai.top_k, search.max_retries, search.provider) == (4, 0, "brave")  # brave: its key alone is set
    assert openai.configured and search.configured
    # Secrets (and URLs that may carry one) reach the resources as EnvVar, never as their value.
    assert "password" not in repr(openai) and "brave-key" not in repr(search)
    assert "password" not in repr(Settings.from_env()) and "brave-key" not in repr(Settings.from_env())


def test_secrets_are_never_settings() -> None:
    variables = {env_name(name) for name in Settings.model_fields}
    # The database URL is the one that is both (the CLI and the API open the database themselves).
    assert variables & set(SECRET_VARIABLES) == {"MATCHING_DATABASE_URL"}
    with pytest.raises(KeyError, match="not a secret"):
        secret("MATCHING_DATA_DIR")


def test_every_setting_is_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [env_name(name) for name in Settings.model_fields if f"`{env_name(name)}`" not in readme]
    assert not missing, f"README.md does not list {missing}"
