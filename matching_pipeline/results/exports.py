"""Writing CSV files that people open in spreadsheets, without carrying formulas into them.

Item descriptions and extra columns come from other shops' files; a cell such as
``=cmd|' /C calc'!A0`` written unchanged into an export runs as a formula when the export is opened
in Excel or LibreOffice (CSV injection). Following OWASP's advice, every text cell that begins with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return is prefixed with a single quote, which
spreadsheets show as text. Numeric columns (``confidence``) are written as numbers: a float cannot
hold a formula, and prefixing it would turn it into text. Every CSV export goes through
:func:`write_csv`, so the rule lives in one place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet read a cell as a formula (OWASP CSV injection)."""


def neutralise_cell(value: Any) -> Any:
    """``value`` with a leading single quote when it is text that a spreadsheet would run.

    Anything that is not a ``str`` (numbers, ``None``, booleans) is returned unchanged.
    """
    if isinstance(value, str) and value.startswith(FORMULA_TRIGGERS):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells are neutralised; numeric columns are left alone.

    Column names are neutralised too: a header row is a row of cells like any other.
    """
    safe = frame.copy()
    for name in safe.columns:
        column = safe[name]
        if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            continue
        safe[name] = pd.Series([neutralise_cell(v) for v in column], index=column.index, dtype=object)
    safe.columns = [neutralise_cell(str(c)) for c in safe.columns]
    return safe


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` as CSV (UTF-8, no index) with formula-like cells neutralised.

    Lines end with CRLF (RFC 4180): with pandas' default ``\n`` the csv writer leaves a carriage
    return inside a value unquoted, and spreadsheets then split that row in two. Written under a
    temporary name and renamed, so a reader (or an inbox watching the folder) never sees half a
    file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    neutralise_frame(frame).to_csv(tmp, index=False, encoding="utf-8", lineterminator="\r\n")
    tmp.replace(path)
