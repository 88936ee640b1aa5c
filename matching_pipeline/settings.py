"""Every setting the pipeline reads from the environment, in one place.

The CLI, the Dagster definitions and the tests all build their view of the world from
:class:`Settings`, so a variable documented in the README is read in exactly one spot.
Secrets (API keys, tokens) and URLs that may carry a credential are not held here: the Dagster
resources read them through ``dagster.EnvVar`` so that they never land in run config, logs or
metadata, and what else needs one (is it set? the webhook's URL and secret, the API's token) reads
it through :func:`secret`. The only other variable the package reads itself is ``DAGSTER_HOME``
(``cli.py``); Alembic's ``results/migrations/env.py`` runs outside the package's settings.
"""

from __future__ import annotations

import functools
import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from matching_pipeline.core.llm import DEFAULT_SCORE_BAND
from matching_pipeline.core.readers import FieldLimits, ReadOptions
from matching_pipeline.core.review import ReviewSettings

SAMPLE_DIR = Path(__file__).parent / "sample"
ENV_PREFIX = "MATCHING_"
SECRET_VARIABLES = (
    "OPENAI_API_KEY",
    "BRAVE_SEARCH_API_KEY",
    "MATCHING_WEBHOOK_SECRET",
    "MATCHING_API_TOKEN",
    "MATCHING_WEBHOOK_URL",
    "SEARXNG_URL",
    "OPENAI_BASE_URL",
    "MATCHING_DATABASE_URL",
)
"""Variables whose value is a secret or may carry one (a token in a URL's path or query, a password
in a database URL): never a :class:`Settings` value, read through :func:`secret` only. The
resources receive them as ``dagster.EnvVar``. ``MATCHING_DATABASE_URL`` is the one exception that
is *also* a setting (:attr:`Settings.database_url`): the CLI and the API open the database
themselves; the code location still hands it to its resource as an ``EnvVar`` when it is set."""


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

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, frozen=True, extra="forbid", populate_by_name=True
    )

    data_dir: Path = Path("data")
    """Inbox, processed, rejected, exports, catalog index cache and the default results database."""
    inbox_dir: Path
    """Where ``<project>/`` folders of item files arrive (default ``<data_dir>/inbox``)."""
    database_url: str
    """The results database (default SQLite ``<data_dir>/results.db``)."""
    catalog_path: str = str(SAMPLE_DIR / "catalog.csv")
    """The reference catalog: a local path, or a URL every worker reaches (``s3://bucket/key.csv``,
    ``file:///shared/catalog.csv``) read through ``clients/object_store.py``. A path is made
    absolute at load; a URL is kept as given."""
    catalog_encoding: str = "utf-8"
    catalog_columns: ColumnMap = Field(default_factory=dict)
    items_encoding: str = "utf-8"
    item_columns: ColumnMap = Field(default_factory=dict)
    max_description_chars: int = Field(10_000, ge=1)
    """Longest description (extra, non-contract column, column name) accepted in an item or catalog file."""
    max_field_chars: int = Field(1_000, ge=1)
    """Longest id, part number, manufacturer or GTIN accepted."""
    inbox_settle_seconds: float = Field(2.0, ge=0.0)
    """An inbox file without a ``.done`` marker is taken at the first scan at least this long after a
    scan that saw it with the same size and mtime (the local inbox is scanned about every 5 s)."""
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

    # The AI stage: resource ``openai`` (``defs/openai_resource.py``, docs/ai_stage.md). Its key and
    # base URL are secrets (:data:`SECRET_VARIABLES`).
    ai_model: str = "gpt-4o-mini"
    """Model name sent with each request; part of the cache key."""
    ai_items_per_request: Literal["item", "chunk"] = "chunk"
    """``chunk``: ten items per request; ``item``: one request per item."""
    ai_top_k: int = Field(10, ge=1)
    """Most candidates shown per item."""
    ai_score_band: float = Field(DEFAULT_SCORE_BAND, ge=0.0)
    """Show only candidates scoring at most this far below the item's best; 1 shows all ``top_k``."""
    ai_requests_per_minute: float = Field(500.0, gt=0.0)
    ai_tokens_per_minute: float = Field(200_000.0, gt=0.0)
    ai_max_concurrency: int = Field(16, ge=1)
    ai_timeout_s: float = Field(60.0, gt=0.0)
    ai_max_retries: int = Field(5, ge=0)
    ai_price_input_per_1m: float = Field(0.15, ge=0.0)
    """USD per million prompt tokens, for ``estimated_cost_usd``."""
    ai_price_output_per_1m: float = Field(0.60, ge=0.0)
    ai_refresh_cache: bool = False
    """Ask the model again even when a cached answer exists."""

    # The web-search stage: resource ``search`` (``defs/search_resource.py``,
    # docs/web_search_stage.md). ``SEARXNG_URL`` and ``BRAVE_SEARCH_API_KEY`` are secrets.
    search_provider: Literal["searxng", "brave"] | None = None
    """None: SearXNG, or Brave when only a Brave key is set."""
    brave_search_base_url: str = Field("https://api.search.brave.com", validation_alias="BRAVE_SEARCH_BASE_URL")
    """Read from ``BRAVE_SEARCH_BASE_URL`` (no ``MATCHING_`` prefix); tests point it at 127.0.0.1."""
    search_qps: float = Field(1.0, gt=0.0)
    """Query budget, across concurrent runs (pool ``web_search``)."""
    search_max_concurrency: int = Field(4, ge=1)
    search_timeout_s: float = Field(10.0, gt=0.0)
    search_max_retries: int = Field(3, ge=0)
    search_cache_ttl_days: float = Field(30.0, ge=0.0)
    search_results: int = Field(5, ge=1)
    """Results read per query (Brave: at most 20)."""

    # Notifications (``defs/notifications.py``): the URL and the secret are secrets.
    webhook_attempts: int = Field(4, ge=1)
    """Delivery attempts of one notification."""
    webhook_wait_max: float = Field(8.0, ge=0.0)
    """Longest back-off between two attempts, in seconds."""
    notify_interval_seconds: int = Field(30, ge=1)
    """How often the notification sensors look for finished jobs."""

    # Schedules (``defs/schedules.py``, ``defs/retention.py``).
    repair_cron: str = "0 2 * * *"
    """When the repair schedules run."""
    catalog_rerun_cron: str = "30 3 * * *"
    """When the catalog re-run schedule runs."""
    schedule_timezone: str = "UTC"
    """The timezone of every schedule's cron (an IANA name)."""
    repair_lookback_days: int = Field(7, ge=0)
    """How far back, in days of job creation, the repair looks for jobs."""

    @model_validator(mode="before")
    @classmethod
    def _locations_under_the_data_dir(cls, data: Any) -> Any:
        """The inbox and the SQLite database default to places under ``data_dir``."""
        if isinstance(data, dict):
            data_dir = Path(data.get("data_dir") or "data").resolve()
            data = {"inbox_dir": data_dir / "inbox", "database_url": default_database_url(data_dir), **data}
        return data

    @field_validator("data_dir", "inbox_dir", "vocabulary_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Relative paths are taken from the working directory at load, once, not at each use."""
        return None if path is None else path.resolve()

    @field_validator("catalog_path", mode="before")
    @classmethod
    def _catalog_location(cls, value: Any) -> Any:
        """A URL (``scheme://...``, the test fsspec applies) is kept; a path is made absolute like the others."""
        if isinstance(value, Path) or (isinstance(value, str) and "://" not in value):
            return str(Path(value).resolve())
        return value

    @field_validator("catalog_columns", "item_columns", mode="before")
    @classmethod
    def _column_map(cls, value: Any) -> Any:
        return parse_column_map(value) if isinstance(value, str) else value

    @field_validator("repair_cron", "catalog_rerun_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        """Checked the way Dagster checks a schedule's cron (its checker is not public API), so a
        bad cron is named here instead of failing the load as an anonymous schedule definition.
        Dagster is imported only here, when a cron is set: the CLI's settings stay light."""
        import dagster as dg

        try:
            dg.ScheduleDefinition(name="cron_check", cron_schedule=value, job_name="cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError("not a cron expression Dagster accepts (five fields, e.g. '0 2 * * *')") from None
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("not an IANA timezone name such as UTC or Europe/Berlin") from None
        return value

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
    """The environment variable a :class:`Settings` field is read from: ``MATCHING_<NAME>``, or
    its alias for the few variables named by a convention outside this package."""
    alias = Settings.model_fields[field_name].validation_alias if field_name in Settings.model_fields else None
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{field_name.upper()}"


ALIASED_VARIABLES = frozenset(name for name in map(env_name, Settings.model_fields) if not name.startswith(ENV_PREFIX))
"""Settings variables without the ``MATCHING_`` prefix (``BRAVE_SEARCH_BASE_URL``)."""


def _variable(loc: tuple[int | str, ...]) -> str:
    """The variable an error's location points at (a field name, or the alias it was read by)."""
    if not loc:
        return "settings"
    where = str(loc[0])
    return where if where in ALIASED_VARIABLES else env_name(where)


def _describe(error: ValidationError) -> str:
    problems = [f"{_variable(d['loc'])}={d['input']!r}: {d['msg']}" for d in error.errors(include_url=False)]
    return "invalid setting: " + "; ".join(problems)


def secret(name: str) -> str | None:
    """The value of secret variable ``name`` (one of :data:`SECRET_VARIABLES`), None when unset or
    empty. For deciding whether a secret is configured, and for the few readers that are not
    Dagster resources (the webhook sender, the HTTP API's token check); resources take an
    ``dagster.EnvVar`` instead, so the value never reaches their config."""
    if name not in SECRET_VARIABLES:
        raise KeyError(f"{name} is not a secret variable; settings are read through Settings")
    return os.environ.get(name) or None


def current_settings() -> Settings:
    """The settings for the environment of this moment, parsed once per distinct environment.

    For code that runs where no :class:`Settings` was handed down (a retry wrapper around every
    database call, a module-level stage table): it costs a scan of ``os.environ`` per call
    instead of a full parse, yet a test or process that changes a ``MATCHING_*`` variable sees it.
    """
    snapshot = tuple(
        sorted(
            (name, value)
            for name, value in os.environ.items()
            if name.upper().startswith(ENV_PREFIX) or name.upper() in ALIASED_VARIABLES
        )
    )
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
