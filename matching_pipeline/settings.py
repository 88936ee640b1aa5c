"""Every setting the pipeline reads from the environment, in one place.

The CLI, the Dagster definitions and the tests all build their view of the world from
:class:`Settings`, so a variable documented in the README is read in exactly one spot.
Secrets (API keys) are not held here: the Dagster resources read them through ``dagster.EnvVar``
so that they never land in run config, logs or metadata.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from matching_pipeline.core.readers import FieldLimits, ReadOptions
from matching_pipeline.core.review import ReviewSettings

SAMPLE_DIR = Path(__file__).parent / "sample"
ENV_PREFIX = "MATCHING_"


def parse_column_map(text: str | None) -> dict[str, str]:
    """Parse ``"item_id=SKU,description=Item Name"`` into ``{"item_id": "SKU", ...}``.

    Column mapping is configuration, not code: the same parser serves environment variables,
    CLI options and the per-project ``columns.json`` alternative.
    """
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        canonical, sep, source = part.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise ValueError(f"column mapping {part!r} is not of the form canonical=source")
        mapping[canonical.strip()] = source.strip()
    return mapping


ColumnMap = Annotated[dict[str, str], NoDecode]
"""A column mapping; in the environment it is ``canonical=source,...`` text (not JSON)."""


class SettingsError(ValueError):
    """A setting has an invalid value. The message names the environment variable to fix."""


class Settings(BaseSettings):
    """Where data lives, how inputs are read and how stages are sized; see the README's settings table.

    Each field ``name`` is read from ``MATCHING_<NAME>`` (an empty value counts as unset), validated
    when the object is built, and frozen afterwards: the code location builds one when its
    definitions load (``definitions.py``), the CLI one per command, and nothing re-reads the
    environment behind their back. Build it with :meth:`from_env`, whose errors name the variable.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid")

    data_dir: Path = Path("data")
    """Inbox, processed, rejected, exports, catalog index cache and the default results database."""
    inbox_dir: Path
    """Where ``<project>/`` folders of item files arrive (default ``<data_dir>/inbox``)."""
    database_url: str
    """The results database (default SQLite ``<data_dir>/results.db``)."""
    catalog_path: Path = SAMPLE_DIR / "catalog.csv"
    catalog_encoding: str = "utf-8"
    catalog_columns: ColumnMap = Field(default_factory=dict)
    items_encoding: str = "utf-8"
    item_columns: ColumnMap = Field(default_factory=dict)
    max_description_chars: int = Field(10_000, ge=1)
    """Longest description (extra, non-contract column, column name) accepted in an item or catalog file."""
    max_field_chars: int = Field(1_000, ge=1)
    """Longest id, part number, manufacturer or GTIN accepted."""
    inbox_settle_seconds: float = Field(5.0, ge=0.0)
    """An inbox file without a ``.done`` marker is taken once unchanged for this long."""
    inbox_require_done: bool = False
    """Take only inbox files whose ``<name>.done`` marker exists."""
    review_confidence: float = Field(ReviewSettings.confidence, ge=0.0, le=1.0)
    """Model and web matches below this confidence enter the review queue (see :attr:`review`)."""
    review_close_score: float = Field(ReviewSettings.close_score, ge=0.0, le=1.0)
    """Unmatched items whose best candidate scores at least this enter the review queue."""
    vocabulary_dir: Path | None = None
    """Extra vocabulary files (colours, editions, makers...) added to the packaged ones
    (see ``core/vocabulary/README.md``)."""
    target_precision: float = Field(0.99, gt=0.0, le=1.0)
    """Precision on the user's labels below which the evaluation check warns, and the default
    target of ``evaluate``'s threshold suggestion."""
    api_max_body_bytes: int = Field(10 * 1024 * 1024, ge=1)
    """Largest request body the HTTP API reads: an item upload is held in memory while it is
    validated, so an unbounded body could exhaust the API pod."""
    chunks_per_run_enhanced: int | None = Field(None, ge=1)
    """Chunks one run of the stage covers; None keeps the stage's own default (``defs/stages.py``)."""
    chunks_per_run_ai: int | None = Field(None, ge=1)
    chunks_per_run_web_search: int | None = Field(None, ge=1)
    chunk_time_budget_seconds: float = Field(300.0, ge=0.0)
    """The most one chunk may take to be decided; 0 = no limit."""
    pool_wait_timeout_seconds: int = Field(3600, ge=0)
    """How long a run executed in process waits for a busy pool slot."""
    db_retry_seconds: float = Field(30.0, ge=0.0)
    """How long a safe database operation retries a lost connection (a Postgres restart takes seconds)."""
    check_max_error_rate: float = Field(0.05, ge=0.0, le=1.0)
    """Share of a run's decisions, per project, that may carry an error before the check warns."""
    check_max_match_rate_drop: float = Field(0.2, ge=0.0, le=1.0)
    """How far (absolute) a batch's match rate may fall below the recent batches' mean."""
    check_recent_batches: int = Field(5, ge=1)
    """How many earlier batches of the project that mean covers."""
    partition_retention_days: int = Field(7, ge=0)
    """Days after its last decision that a finished batch's chunk keys are retired from Dagster's
    partition set (``defs/retention.py``); 0 keeps every key for ever."""
    index_url: str = ""
    """Where every worker finds the catalog index (``s3://bucket/prefix``, ``file:///shared``); empty
    keeps it in ``<data_dir>/catalog_index`` only. Workers on an empty disk need it (Kubernetes)."""
    inbox_url: str = ""
    """An object-store inbox (``s3://bucket/prefix``: item files under ``<prefix>/<project>/``),
    watched besides the local inbox folder; empty watches the folder only."""
    s3_endpoint_url: str = ""
    """The endpoint of an S3-compatible store (MinIO, Ceph...); empty means AWS. Credentials are
    the standard ``AWS_*`` variables, read by botocore, never by this package."""

    @model_validator(mode="before")
    @classmethod
    def _locations_under_the_data_dir(cls, data: Any) -> Any:
        """The inbox and the SQLite database default to places under ``data_dir``."""
        if isinstance(data, dict):
            data_dir = Path(data.get("data_dir") or "data").resolve()
            data = {"inbox_dir": data_dir / "inbox", "database_url": default_database_url(data_dir), **data}
        return data

    @field_validator("data_dir", "inbox_dir", "catalog_path", "vocabulary_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Relative paths are taken from the working directory at load, once, not at each use."""
        return None if path is None else path.resolve()

    @field_validator("catalog_columns", "item_columns", mode="before")
    @classmethod
    def _column_map(cls, value: Any) -> Any:
        return parse_column_map(value) if isinstance(value, str) else value

    @classmethod
    def from_env(cls) -> Settings:
        """The settings as the environment describes them; an invalid value raises
        :class:`SettingsError` naming every offending variable and its value."""
        try:
            return cls()
        except ValidationError as exc:
            raise SettingsError(_describe(exc)) from None

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied and validated (the CLI's options over the environment)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @property
    def review(self) -> ReviewSettings:
        """What enters the review queue; applied as each stage writes its results."""
        return ReviewSettings(confidence=self.review_confidence, close_score=self.review_close_score)

    @property
    def field_limits(self) -> FieldLimits:
        return FieldLimits(text=self.max_description_chars, field=self.max_field_chars)

    @property
    def item_read_options(self) -> ReadOptions:
        """How item files are read, wherever they arrive (CLI, API, inboxes)."""
        return ReadOptions(encoding=self.items_encoding, columns=self.item_columns, limits=self.field_limits)

    @property
    def rejected_dir(self) -> Path:
        return self.data_dir / "rejected"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "catalog_index"

    @property
    def labels_dir(self) -> Path:
        """``<project>.csv`` here holds a project's labels for the evaluation asset."""
        return self.data_dir / "labels"

    @property
    def evaluation_dir(self) -> Path:
        """``<project>/evaluation.json`` and its chart, written by ``evaluate`` and the asset."""
        return self.data_dir / "evaluation"


def env_name(field_name: str) -> str:
    """The environment variable a :class:`Settings` field is read from."""
    return f"{ENV_PREFIX}{field_name.upper()}"


def _describe(error: ValidationError) -> str:
    problems = []
    for detail in error.errors(include_url=False):
        where = env_name(str(detail["loc"][0])) if detail["loc"] else "settings"
        problems.append(f"{where}={detail['input']!r}: {detail['msg']}")
    return "invalid setting: " + "; ".join(problems)


def current_settings() -> Settings:
    """The settings for the environment of this moment, parsed once per distinct environment.

    For code that runs where no :class:`Settings` was handed down (a retry wrapper around every
    database call, a module-level stage table): it costs a scan of ``os.environ`` per call
    instead of a full parse, yet a test or process that changes a ``MATCHING_*`` variable sees it.
    """
    snapshot = tuple(sorted((name, value) for name, value in os.environ.items() if name.upper().startswith(ENV_PREFIX)))
    return _settings_for(snapshot, os.getcwd())


@functools.lru_cache(maxsize=8)
def _settings_for(snapshot: tuple[tuple[str, str], ...], cwd: str) -> Settings:
    """``snapshot`` and ``cwd`` are the cache key: what :meth:`Settings.from_env` depends on."""
    return Settings.from_env()


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'results.db').resolve()}"


def chunks_per_run(stage: str, default: int) -> int:
    """How many ten-item chunks one run of ``stage`` covers (``MATCHING_CHUNKS_PER_RUN_<STAGE>``),
    ``default`` (the stage's own) when that is unset."""
    value: int | None = getattr(current_settings(), f"chunks_per_run_{stage}")
    return default if value is None else value


def pool_wait_timeout_seconds() -> int:
    """How long a run executed in process waits for a busy pool slot (``MATCHING_POOL_WAIT_TIMEOUT_SECONDS``)."""
    return current_settings().pool_wait_timeout_seconds


def chunk_time_budget_seconds() -> float:
    """The most one chunk may take to be decided (``MATCHING_CHUNK_TIME_BUDGET_SECONDS``; 0 = no limit)."""
    return current_settings().chunk_time_budget_seconds


def db_retry_seconds() -> float:
    """How long a safe database operation retries a lost connection (``MATCHING_DB_RETRY_SECONDS``)."""
    return current_settings().db_retry_seconds


@dataclass(frozen=True)
class CheckThresholds:
    """When the stage assets' checks warn (see ``defs/checks.py``).

    ``max_error_rate``: share of a run's decisions, per project, that may carry an error
    (``MATCHING_CHECK_MAX_ERROR_RATE``). ``max_match_rate_drop``: how far (absolute) a batch's match
    rate may fall below the mean of the project's ``recent_batches`` earlier batches
    (``MATCHING_CHECK_MAX_MATCH_RATE_DROP``, ``MATCHING_CHECK_RECENT_BATCHES``).
    """

    max_error_rate: float = 0.05
    max_match_rate_drop: float = 0.2
    recent_batches: int = 5


def check_thresholds() -> CheckThresholds:
    """The checks' thresholds from the environment, validated (by :class:`Settings`) so a typo fails loudly."""
    settings = current_settings()
    return CheckThresholds(
        max_error_rate=settings.check_max_error_rate,
        max_match_rate_drop=settings.check_max_match_rate_drop,
        recent_batches=settings.check_recent_batches,
    )
