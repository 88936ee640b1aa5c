"""Shared fixtures: a clean environment, isolated settings, results databases (SQLite and the real
Postgres) and Dagster instances, so every test runs against real storage and leaves nothing behind.

Test tiers (markers registered in pyproject.toml): ``postgres`` for tests that need the server on
5432 or start a private cluster, ``e2e`` for tests that start dagster-daemon / dagster-webserver
processes, ``slow`` for tests over about ten seconds. ``make test`` runs everything; ``make
test-fast`` deselects the three. The Postgres fixtures refuse to serve an unmarked test, so the fast
tier cannot silently depend on a server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from matching_pipeline.jobs.runner import restore_interrupts
from matching_pipeline.sample.generator import write_sample
from matching_pipeline.settings import SAMPLE_DIR, Settings
from tests.pg_cluster import PostgresCluster, require_cluster_binaries
from tests.servers.s3_server import FAKE_CREDENTIALS, LocalS3, moto_s3

POSTGRES_ADMIN_URL = os.environ.get("MATCHING_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

CLEARED_PREFIXES = ("MATCHING_", "OPENAI_", "SEARXNG_", "BRAVE_", "DAGSTER_")
"""Variables the pipeline, its resources or Dagster read: none may leak from the shell (``make``
exports ``MATCHING_DATA_DIR`` and ``DAGSTER_HOME`` pointing into the repository) or from a key in a
developer's profile into a test."""
KEPT = ("MATCHING_TEST_", "MATCHING_SLOW_TESTS")
"""The tests' own switches, which configure the test run rather than the code under test."""


def pytest_configure(config: pytest.Config) -> None:
    """A suite started as a background job (SIGINT ignored) would hand an ignored SIGTERM to the
    daemons and run workers its tests start, which then cannot be stopped politely
    (``jobs/runner.restore_interrupts``)."""
    restore_interrupts()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from an environment without the pipeline's variables; a test sets what it
    needs with ``monkeypatch.setenv``, and ``dict(os.environ)`` is then a clean child environment."""
    for name in list(os.environ):
        upper = name.upper()
        if upper.startswith(CLEARED_PREFIXES) and not upper.startswith(KEPT):
            monkeypatch.delenv(name)


def require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    """Fail a test that uses a fixture of a tier without carrying that tier's marker."""
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses {request.fixturename!r}: mark it @pytest.mark.{marker}")


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
def defs(settings: Settings) -> dg.Definitions:
    from matching_pipeline.definitions import build_definitions

    return build_definitions(settings)


@pytest.fixture
def postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards. Its URL."""
    require_marker(request, "postgres")
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


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalS3]:
    """An S3 endpoint on 127.0.0.1 (moto's server) with one bucket, and its throw-away credentials
    in the environment; stopped afterwards."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with moto_s3() as store:
        yield store


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
def job_defs(job_settings: Settings) -> dg.Definitions:
    from matching_pipeline.definitions import build_definitions

    return build_definitions(job_settings)


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The command line's environment: its own DAGSTER_HOME (the shipped dagster.yaml) and data
    directory under ``tmp_path``, which it returns; everything else at its default."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((Path(__file__).parents[1] / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("MATCHING_DATA_DIR", str(tmp_path / "data"))
    from matching_pipeline.defs.resources import open_results_database

    open_results_database.cache_clear()
    yield tmp_path
    open_results_database.cache_clear()


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Iterator[PostgresCluster]:
    """A started private PostgreSQL cluster on a spare port (see tests/pg_cluster.py), for tests
    that restart or stop the server under a running pipeline."""
    require_marker(request, "postgres")
    require_cluster_binaries()
    pg = PostgresCluster()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()
