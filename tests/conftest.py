"""Shared fixtures: isolated settings, results databases (SQLite and the real Postgres) and
Dagster instances, so every test runs against real storage and leaves nothing behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from matching_pipeline.sample.generator import write_sample
from matching_pipeline.settings import SAMPLE_DIR, Settings

POSTGRES_ADMIN_URL = os.environ.get("MATCHING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    return Settings(
        data_dir=data,
        inbox_dir=data / "inbox",
        database_url=f"sqlite:///{data / 'results.db'}",
        catalog_path=SAMPLE_DIR / "catalog.csv",
    )


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """A real (temporary, SQLite-backed) Dagster instance, as ``dagster dev`` would use."""
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def defs(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    from matching_pipeline.definitions import build_definitions

    return build_definitions(settings)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards. Its URL."""
    name = f"mp_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:  # pragma: no cover - CI starts the server first
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        from matching_pipeline.defs.resources import open_results_database

        open_results_database.cache_clear()
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        admin.dispose()


@pytest.fixture(scope="session")
def generated_sample(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small catalog and item list with known answers, independent of the bundled sample."""
    return write_sample(tmp_path_factory.mktemp("sample"), n_catalog=300, n_items=120, seed=3)


@pytest.fixture
def job_settings(tmp_path: Path, generated_sample: dict[str, Path]) -> Settings:
    """Settings whose catalog is the generated sample (answers known), for the job-level tests."""
    data = tmp_path / "data"
    data.mkdir(parents=True)
    return Settings(
        data_dir=data,
        inbox_dir=data / "inbox",
        database_url=f"sqlite:///{data / 'results.db'}",
        catalog_path=generated_sample["catalog"],
    )


@pytest.fixture
def job_defs(job_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SEARXNG_URL", "BRAVE_SEARCH_API_KEY", "MATCHING_DATABASE_URL", "MATCHING_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    from matching_pipeline.definitions import build_definitions

    return build_definitions(job_settings)
