"""Reading and validating item lists and catalogs (CSV, Parquet, JSON Lines).

Bad input must never turn into a quiet loss of rows, so every problem becomes an
:class:`InputError` that names the file, the row and the column, and a file with any bad row is
refused as a whole (the caller keeps it aside with the reason) rather than half-loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from matching_pipeline.core.models import (
    CATALOG_FIELDS,
    ITEM_FIELDS,
    REQUIRED_CATALOG_FIELDS,
    REQUIRED_ITEM_FIELDS,
)

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file. ``row`` is the 1-based data row (header excluded)."""

    reason: str
    row: int | None = None
    column: str | None = None

    def describe(self, path: Path) -> str:
        where = [path.name]
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.reason}"


class InputError(ValueError):
    """An input file that cannot be accepted, with every problem found (up to a limit)."""

    def __init__(self, path: Path, problems: Sequence[Problem]):
        self.path = Path(path)
        self.problems = list(problems)
        lines = [p.describe(self.path) for p in self.problems[:MAX_LISTED_PROBLEMS]]
        if len(self.problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"... and {len(self.problems) - MAX_LISTED_PROBLEMS} more problems")
        super().__init__(f"{self.path}: rejected\n" + "\n".join(f"  {line}" for line in lines))


@dataclass(frozen=True)
class TableSpec:
    """What a kind of input must contain: its id column, required and optional fields."""

    kind: str
    id_field: str
    required: tuple[str, ...]
    known: tuple[str, ...]


ITEMS = TableSpec("items", "item_id", REQUIRED_ITEM_FIELDS, ITEM_FIELDS)
CATALOG = TableSpec("catalog", "catalog_id", REQUIRED_CATALOG_FIELDS, CATALOG_FIELDS)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_table(
    path: Path | str,
    spec: TableSpec,
    *,
    columns: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
    data: bytes | None = None,
) -> pd.DataFrame:
    """Load ``path`` into a frame with canonical column names and string values.

    ``columns`` maps canonical names to the file's own (``{"item_id": "SKU"}``). Every value is
    read as text so that identifiers such as ``00712`` keep their leading zeros; missing optional
    values become ``None``. Columns the contract does not know are kept and carried along.
    ``data`` lets a caller that already read (and hashed) the bytes avoid reading them twice.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputError(path, [Problem(f"unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}")])
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, [Problem(f"cannot be read: {exc.strerror or exc}")]) from exc
    if not data.strip():
        raise InputError(path, [Problem("file is empty")])

    frame = _parse(path, suffix, data, encoding)
    frame = _rename(path, frame, spec, columns or {})
    return _validate(path, frame, spec)


def _parse(path: Path, suffix: str, data: bytes, encoding: str) -> pd.DataFrame:
    if suffix == ".parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise InputError(path, [Problem(f"not a readable Parquet file ({exc})")]) from exc
        return frame

    text = _decode(path, data, encoding)
    if suffix == ".csv":
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
        except pd.errors.EmptyDataError as exc:
            raise InputError(path, [Problem("file has no header row")]) from exc
        except pd.errors.ParserError as exc:
            raise InputError(path, [Problem(f"not valid CSV ({exc})")]) from exc
        return frame

    records: list[dict[str, object]] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(f"line {number} is not valid JSON ({exc.msg})", row=number))
            continue
        if not isinstance(record, dict):
            problems.append(Problem(f"line {number} is not a JSON object", row=number))
            continue
        records.append(record)
    if problems:
        raise InputError(path, problems)
    return pd.DataFrame.from_records(records)


def _decode(path: Path, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n")  # header is line 1, so this is the data row
        raise InputError(
            path,
            [Problem(f"byte {exc.start} is not valid {encoding} (set the file's encoding, e.g. latin-1)", row=row or None)],
        ) from exc
    except LookupError as exc:
        raise InputError(path, [Problem(f"unknown encoding {encoding!r}")]) from exc


def _as_text(value: object, *, strip: bool) -> str | None:
    """Text of a cell; ``None`` for a missing one (and, if ``strip``, for a blank one)."""
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    if strip:
        text = text.strip()
        return text or None
    return text


def _text_column(values: pd.Series, *, strip: bool) -> pd.Series:
    # An explicit object Series: pandas 3 would otherwise infer its string dtype and turn None into NaN.
    return pd.Series([_as_text(v, strip=strip) for v in values], index=values.index, dtype=object)


def _rename(path: Path, frame: pd.DataFrame, spec: TableSpec, columns: Mapping[str, str]) -> pd.DataFrame:
    unknown = [name for name in columns if name not in spec.known]
    if unknown:
        raise InputError(path, [Problem(f"column mapping names unknown field {name!r}; known: {', '.join(spec.known)}") for name in unknown])
    frame.columns = [str(c).strip() for c in frame.columns]
    renames = {source: canonical for canonical, source in columns.items() if source in frame.columns}
    missing = [
        Problem(
            f"required column is missing (found: {', '.join(map(str, frame.columns)) or 'none'})",
            column=columns.get(name, name),
        )
        for name in spec.required
        if columns.get(name, name) not in frame.columns
    ]
    if missing:
        raise InputError(path, missing)
    return frame.rename(columns=renames)


def _validate(path: Path, frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    if frame.empty:
        raise InputError(path, [Problem("file has a header but no rows")])
    for name in spec.known:
        if name not in frame.columns:
            frame[name] = None
    for name in frame.columns:
        frame[name] = _text_column(frame[name], strip=name in spec.known)

    problems: list[Problem] = []
    for name in spec.required:
        for index in frame.index[frame[name].isna()]:
            problems.append(Problem("required value is empty", row=int(index) + 1, column=name))
    ids = frame[spec.id_field]
    duplicated = ids.notna() & ids.duplicated(keep=False)
    for value, rows in frame.index[duplicated].groupby(ids[duplicated]).items():
        row_list = ", ".join(str(r + 1) for r in rows)
        problems.append(
            Problem(f"duplicate {spec.id_field} {value!r} (rows {row_list})", row=int(rows[0]) + 1, column=spec.id_field)
        )
    if problems:
        problems.sort(key=lambda p: (p.row or 0, p.column or ""))
        raise InputError(path, problems)
    ordered = list(spec.known) + [c for c in frame.columns if c not in spec.known]
    return frame[ordered].reset_index(drop=True)
