"""Every setting the pipeline reads from the environment, in one place.

The CLI, the Dagster definitions and the tests all build their view of the world from
:class:`Settings`, so a variable documented in the README is read in exactly one spot.
Secrets (API keys) are not held here: the Dagster resources read them through ``dagster.EnvVar``
so that they never land in run config, logs or metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from matching_pipeline.core.readers import FieldLimits
from matching_pipeline.core.review import ReviewSettings

SAMPLE_DIR = Path(__file__).parent / "sample"


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


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def _env_flag(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {raw!r}")


def review_settings_from_env() -> ReviewSettings:
    """``MATCHING_REVIEW_CONFIDENCE`` and ``MATCHING_REVIEW_CLOSE_SCORE`` (see ``core/review.py``)."""
    defaults = ReviewSettings()
    return ReviewSettings(
        confidence=_env_float("MATCHING_REVIEW_CONFIDENCE", defaults.confidence),
        close_score=_env_float("MATCHING_REVIEW_CLOSE_SCORE", defaults.close_score),
    )


@dataclass(frozen=True)
class Settings:
    """Where data lives and how inputs are read; see the README's settings table."""

    data_dir: Path
    inbox_dir: Path
    database_url: str
    catalog_path: Path
    catalog_encoding: str = "utf-8"
    catalog_columns: dict[str, str] = field(default_factory=dict)
    items_encoding: str = "utf-8"
    item_columns: dict[str, str] = field(default_factory=dict)
    max_description_chars: int = 10_000
    """Longest description (extra, non-contract column, column name) accepted in an item or catalog file."""
    max_field_chars: int = 1_000
    """Longest id, part number, manufacturer or GTIN accepted."""
    inbox_settle_seconds: float = 5.0
    """An inbox file without a ``.done`` marker is taken once unchanged for this long."""
    inbox_require_done: bool = False
    """Take only inbox files whose ``<name>.done`` marker exists."""
    review: ReviewSettings = field(default_factory=ReviewSettings)
    """What enters the review queue; applied as each stage writes its results."""
    vocabulary_dir: Path | None = None
    """Extra vocabulary files (colours, editions, makers...) added to the packaged ones
    (``MATCHING_VOCABULARY_DIR``; see ``core/vocabulary/README.md``)."""
    target_precision: float = 0.99
    """Precision on the user's labels below which the evaluation check warns, and the default
    target of ``evaluate``'s threshold suggestion (``MATCHING_TARGET_PRECISION``)."""

    @property
    def field_limits(self) -> FieldLimits:
        return FieldLimits(text=self.max_description_chars, field=self.max_field_chars)

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

    @classmethod
    def from_env(cls) -> Settings:
        data_dir = Path(os.environ.get("MATCHING_DATA_DIR") or "data").resolve()
        return cls(
            data_dir=data_dir,
            inbox_dir=Path(os.environ.get("MATCHING_INBOX_DIR") or data_dir / "inbox").resolve(),
            database_url=os.environ.get("MATCHING_DATABASE_URL") or default_database_url(data_dir),
            catalog_path=Path(
                os.environ.get("MATCHING_CATALOG_PATH") or SAMPLE_DIR / "catalog.csv"
            ).resolve(),
            catalog_encoding=os.environ.get("MATCHING_CATALOG_ENCODING") or "utf-8",
            catalog_columns=parse_column_map(os.environ.get("MATCHING_CATALOG_COLUMNS")),
            items_encoding=os.environ.get("MATCHING_ITEMS_ENCODING") or "utf-8",
            item_columns=parse_column_map(os.environ.get("MATCHING_ITEM_COLUMNS")),
            max_description_chars=_env_int("MATCHING_MAX_DESCRIPTION_CHARS", 10_000),
            max_field_chars=_env_int("MATCHING_MAX_FIELD_CHARS", 1_000),
            inbox_settle_seconds=_env_float("MATCHING_INBOX_SETTLE_SECONDS", 5.0),
            inbox_require_done=_env_flag("MATCHING_INBOX_REQUIRE_DONE", False),
            review=review_settings_from_env(),
            target_precision=_target_precision_from_env(),
            vocabulary_dir=Path(os.environ["MATCHING_VOCABULARY_DIR"]).resolve()
            if os.environ.get("MATCHING_VOCABULARY_DIR")
            else None,
        )


def _target_precision_from_env() -> float:
    value = _env_float("MATCHING_TARGET_PRECISION", 0.99)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"MATCHING_TARGET_PRECISION must be in (0, 1], got {value}")
    return value


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'results.db').resolve()}"


def chunks_per_run(stage: str, default: int) -> int:
    """How many ten-item chunks one run of ``stage`` covers (``MATCHING_CHUNKS_PER_RUN_<STAGE>``)."""
    return _env_int(f"MATCHING_CHUNKS_PER_RUN_{stage.upper()}", default)


def pool_wait_timeout_seconds() -> int:
    """How long a run executed in process waits for a busy pool slot (``MATCHING_POOL_WAIT_TIMEOUT_SECONDS``)."""
    return _env_int("MATCHING_POOL_WAIT_TIMEOUT_SECONDS", 3600)


def chunk_time_budget_seconds() -> float:
    """The most one chunk may take to be decided (``MATCHING_CHUNK_TIME_BUDGET_SECONDS``; 0 = no limit)."""
    return _env_float("MATCHING_CHUNK_TIME_BUDGET_SECONDS", 300.0)


def db_retry_seconds() -> float:
    """How long a safe database operation retries a lost connection (``MATCHING_DB_RETRY_SECONDS``)."""
    return _env_float("MATCHING_DB_RETRY_SECONDS", 30.0)
