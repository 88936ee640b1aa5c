"""Reading and validating item lists and catalogs (CSV, Parquet, JSON Lines).

Bad input must never turn into a quiet loss of rows, so every problem becomes an
:class:`InputError` that names the file, the row and the column, and a file with any bad row is
refused as a whole (the caller keeps it aside with the reason) rather than half-loaded. That
includes failures nobody foresaw: :func:`read_table` turns any exception raised while parsing a
file into an :class:`InputError`, so one odd file can never stop a caller that handles many.

Values are bounded (:class:`FieldLimits`) because every later stage does work per character: one
50 MB description must be refused here, not discovered as a stage that never ends. Nested and
binary values (Parquet list/struct/map/binary columns, JSON objects and arrays) are refused rather
than stringified: ``"['Q2']"`` is not what the sender meant, and matching on it would be a guess.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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

FREE_TEXT_FIELDS = ("description",)
"""Contract fields that hold prose; the other contract fields hold ids, codes and names."""


@dataclass(frozen=True)
class FieldLimits:
    """The longest value (in characters) a file may hold, per kind of column.

    ``text`` bounds free text: ``description``, every column outside the contract (carried along,
    often a longer description or notes) and column names. ``field`` bounds the short contract
    fields: the id, ``part_number``, ``manufacturer``, ``gtin``. Defaults match
    ``MATCHING_MAX_DESCRIPTION_CHARS`` and ``MATCHING_MAX_FIELD_CHARS``.
    """

    text: int = 10_000
    field: int = 1_000

    def for_column(self, name: str, spec: TableSpec) -> tuple[int, str]:
        """The limit for column ``name`` and the setting that raises it."""
        if name in spec.known and name not in FREE_TEXT_FIELDS:
            return self.field, "MATCHING_MAX_FIELD_CHARS"
        return self.text, "MATCHING_MAX_DESCRIPTION_CHARS"


DEFAULT_LIMITS = FieldLimits()


@dataclass(frozen=True)
class ReadOptions:
    """How an item file is read: its encoding, its own column names (``{"item_id": "SKU"}``) and
    the longest values accepted. One value, so every way a file arrives (CLI, API, local and
    object-store inbox) reads it alike."""

    encoding: str = "utf-8"
    columns: Mapping[str, str] = field(default_factory=dict)
    limits: FieldLimits = DEFAULT_LIMITS


DEFAULT_READ = ReadOptions()

BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
"""A byte-order mark names the file's encoding for certain, so it wins over the configured one
(Excel's "CSV UTF-8" starts with one; "Unicode text" is UTF-16 with one). UTF-32 goes first: its
little-endian mark begins with UTF-16's."""


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_table(
    path: Path | str,
    spec: TableSpec,
    *,
    columns: Mapping[str, str] | None = None,
    encoding: str = "utf-8",
    data: bytes | None = None,
    limits: FieldLimits = DEFAULT_LIMITS,
) -> pd.DataFrame:
    """Load ``path`` into a frame with canonical column names and string values.

    ``columns`` maps canonical names to the file's own (``{"item_id": "SKU"}``). Every value is
    read as text so that identifiers such as ``00712`` keep their leading zeros; missing optional
    values become ``None``. Columns the contract does not know are kept and carried along.
    ``data`` lets a caller that already read (and hashed) the bytes avoid reading them twice.
    ``limits`` bounds the length of every value. Whatever goes wrong, the only exception that
    leaves is :class:`InputError`.
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

    try:
        frame = _parse(path, suffix, data, encoding)
        frame = _rename(path, frame, spec, columns or {})
        return _validate(path, frame, spec, limits)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unforeseen failure is still this file's rejection
        raise InputError(path, [Problem(f"could not be read ({type(exc).__name__}: {_short(str(exc))})")]) from exc


def _short(text: str, limit: int = 300) -> str:
    """Cut text quoted from a file or a library (which may quote the file) to a readable length."""
    text = text.replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"


def _parse(path: Path, suffix: str, data: bytes, encoding: str) -> pd.DataFrame:
    if suffix == ".parquet":
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
            raise InputError(path, [Problem(f"not a readable Parquet file ({_short(str(exc))})")]) from exc
        unsupported = [
            Problem(f"column type {field.type} is not supported: use text, numbers, booleans or dates", column=field.name)
            for field in table.schema
            if _nested_or_binary(field.type)
        ]
        if unsupported:
            raise InputError(path, unsupported)
        # Stored columns as plain columns: a named pandas index (say ``item_id``) is data, and an
        # unnamed one is pandas' bookkeeping that the sender never saw as a column.
        frame = table.to_pandas(ignore_metadata=True)
        return frame.drop(columns=[c for c in frame.columns if str(c).startswith("__index_level_")])

    text = _decode(path, data, encoding)
    if suffix == ".csv":
        try:
            with warnings.catch_warnings():
                # A row longer than the header would otherwise shift every column by one (pandas
                # takes the extra leading field as the index); with index_col=False it warns instead.
                warnings.simplefilter("error", pd.errors.ParserWarning)
                frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False, index_col=False)
        except pd.errors.EmptyDataError as exc:
            raise InputError(path, [Problem("file has no header row")]) from exc
        except pd.errors.ParserError as exc:
            raise InputError(path, [Problem(f"not valid CSV ({_short(str(exc))})")]) from exc
        except pd.errors.ParserWarning as exc:
            raise InputError(path, [Problem("row has more fields than the header", row=_first_long_row(text))]) from exc
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
        problems.extend(
            Problem(f"value is a JSON {'object' if isinstance(value, dict) else 'array'}: use text, numbers or booleans", row=number, column=str(key))
            for key, value in record.items()
            if isinstance(value, (dict, list))
        )
        records.append(record)
    if problems:
        raise InputError(path, problems)
    return pd.DataFrame.from_records(records)


def _nested_or_binary(kind: pa.DataType) -> bool:
    """Whether a Parquet column holds values that have no honest single-text form."""
    if isinstance(kind, pa.DictionaryType):
        return _nested_or_binary(kind.value_type)
    if isinstance(kind, pa.ExtensionType):
        return _nested_or_binary(kind.storage_type)
    return (
        pa.types.is_nested(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_fixed_size_binary(kind)
        or pa.types.is_binary_view(kind)
    )


def _first_long_row(text: str) -> int | None:
    """The 1-based data row of a CSV that has more fields than its header, if it can be found."""
    try:
        rows = csv.reader(io.StringIO(text))
        width = len(next(rows))
        for number, row in enumerate(rows, start=1):
            if len(row) > width:
                return number
    except (csv.Error, StopIteration):  # fields over csv's size limit; the message still says what
        return None
    return None


def _decode(path: Path, data: bytes, encoding: str) -> str:
    for mark, bom_encoding in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            encoding = bom_encoding
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        row = data[: exc.start].count(b"\n")  # header is line 1, so this is the data row
        raise InputError(
            path,
            [Problem(f"byte {exc.start} is not valid {encoding} (set the file's encoding, e.g. latin-1)", row=row or None)],
        ) from exc
    except LookupError as exc:
        raise InputError(path, [Problem(f"unknown encoding {encoding!r}")]) from exc
    if "\x00" in text:
        # Valid in UTF-8 but never in a text file: UTF-16 without a byte-order mark, or binary data.
        row = text.count("\n", 0, text.index("\x00"))
        raise InputError(
            path,
            [Problem(f"contains NUL characters: not {encoding} text (UTF-16 without a byte-order mark, or binary?)", row=row or None)],
        )
    return text


class _UnsupportedValue(TypeError):
    """A cell whose value has no honest single-text form (a list, a mapping, bytes)."""


UNSUPPORTED_VALUES = (list, tuple, set, dict, bytes, bytearray, memoryview, np.ndarray)


def _as_text(value: object, *, strip: bool) -> str | None:
    """Text of a cell; ``None`` for a missing one (and, if ``strip``, for a blank one)."""
    if type(value) is str:  # nearly every cell: skip the checks below
        text = value
    elif isinstance(value, UNSUPPORTED_VALUES):
        raise _UnsupportedValue(type(value).__name__)
    elif value is None or pd.isna(value):
        return None
    elif isinstance(value, float) and value.is_integer():
        return str(int(value))
    else:
        text = str(value)
    if strip:
        text = text.strip()
        return text or None
    return text


def _text_column(values: pd.Series, *, strip: bool) -> pd.Series:
    # An explicit object Series: pandas 3 would otherwise infer its string dtype and turn None into NaN.
    # tolist() first: iterating an Arrow-backed string column cell by cell is several times slower.
    return pd.Series([_as_text(v, strip=strip) for v in values.tolist()], index=values.index, dtype=object)


def _rename(path: Path, frame: pd.DataFrame, spec: TableSpec, columns: Mapping[str, str]) -> pd.DataFrame:
    unknown = [name for name in columns if name not in spec.known]
    if unknown:
        raise InputError(path, [Problem(f"column mapping names unknown field {name!r}; known: {', '.join(spec.known)}") for name in unknown])
    frame.columns = [str(c).strip() for c in frame.columns]
    renames = {source: canonical for canonical, source in columns.items() if source in frame.columns}
    missing = [
        Problem(
            f"required column is missing (found: {_short(', '.join(map(str, frame.columns))) or 'none'})",
            column=columns.get(name, name),
        )
        for name in spec.required
        if columns.get(name, name) not in frame.columns
    ]
    if missing:
        raise InputError(path, missing)
    frame = frame.rename(columns=renames)
    twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
    if twice:  # e.g. a mapping description=Name in a file that also has a description column
        raise InputError(path, [Problem("column appears twice (after the column mapping)", column=_short(name, 60)) for name in twice])
    return frame


def _validate(path: Path, frame: pd.DataFrame, spec: TableSpec, limits: FieldLimits = DEFAULT_LIMITS) -> pd.DataFrame:
    if frame.empty:
        raise InputError(path, [Problem("file has a header but no rows")])
    problems: list[Problem] = [
        # Bounded like free text, not like ids: lowering the id limit must not refuse ordinary headers.
        Problem(
            f"column name is {len(str(name)):,} characters long; the limit is {limits.text:,} (MATCHING_MAX_DESCRIPTION_CHARS)",
            column=_short(str(name), 60),
        )
        for name in frame.columns
        if len(str(name)) > limits.text
    ]
    if problems:
        raise InputError(path, problems)
    for name in spec.known:
        if name not in frame.columns:
            frame[name] = None
    for name in frame.columns:
        try:
            frame[name] = _text_column(frame[name], strip=name in spec.known)
        except _UnsupportedValue as exc:
            row = next(i for i, v in enumerate(frame[name], start=1) if isinstance(v, UNSUPPORTED_VALUES))
            problems.append(Problem(f"holds a {exc} value: use text, numbers, booleans or dates", row=row, column=name))
    if problems:
        raise InputError(path, problems)

    for name in frame.columns:
        problems.extend(_bad_values(frame[name], name, *limits.for_column(name, spec)))
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


def _bad_values(values: pd.Series, name: str, limit: int, setting: str) -> list[Problem]:
    """Values over ``limit`` characters, and values with NUL characters (no database stores them)."""
    problems = []
    for row, value in enumerate(values.tolist(), start=1):
        if value is None:
            continue
        if len(value) > limit:
            problems.append(Problem(f"value is {len(value):,} characters long; the limit is {limit:,} ({setting})", row=row, column=name))
        elif "\x00" in value:
            problems.append(Problem("value contains a NUL character", row=row, column=name))
    return problems
