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

    @property
    def rejected_dir(self) -> Path:
        return self.data_dir / "rejected"

    @property
    def processed_dir(self) -> Path:
        return self.data_dir / "processed"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "catalog_index"

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
        )


def default_database_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'results.db').resolve()}"


def chunks_per_run(stage: str, default: int) -> int:
    """How many ten-item chunks one run of ``stage`` covers (``MATCHING_CHUNKS_PER_RUN_<STAGE>``)."""
    return _env_int(f"MATCHING_CHUNKS_PER_RUN_{stage.upper()}", default)
