"""Input validation: every refusal names the file, the row and the column."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from matching_pipeline.core.readers import CATALOG, ITEMS, InputError, read_table


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_keeps_ids_as_text_and_carries_extra_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,description,gtin,qty\n00712,Drill,0012345678905,3\n2,Saw,,\n")
    frame = read_table(path, ITEMS)
    assert frame["item_id"].tolist() == ["00712", "2"]
    assert frame["gtin"].tolist() == ["0012345678905", None]
    assert frame["part_number"].isna().all()
    assert frame["qty"].tolist() == ["3", ""]
    assert list(frame.columns[:5]) == ["item_id", "description", "part_number", "manufacturer", "gtin"]


def test_column_mapping_renames_to_canonical_names(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "SKU,Name\nA1,Drill\n")
    frame = read_table(path, ITEMS, columns={"item_id": "SKU", "description": "Name"})
    assert frame.loc[0, "item_id"] == "A1" and frame.loc[0, "description"] == "Drill"


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,name\n1,Drill\n")
    with pytest.raises(InputError) as err:
        read_table(path, ITEMS)
    assert "items.csv" in str(err.value)
    assert "column 'description'" in str(err.value)
    assert "required column is missing" in str(err.value)


def test_empty_required_value_names_row_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,description\n1,Drill\n2,\n3,Saw\n")
    with pytest.raises(InputError) as err:
        read_table(path, ITEMS)
    assert "items.csv, row 2, column 'description': required value is empty" in str(err.value)


def test_duplicate_ids_list_every_row(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,description\n1,a\n2,b\n1,c\n")
    with pytest.raises(InputError) as err:
        read_table(path, ITEMS)
    assert "duplicate item_id '1' (rows 1, 3)" in str(err.value)


@pytest.mark.parametrize("content", ["", "   \n"])
def test_empty_file(tmp_path: Path, content: str) -> None:
    with pytest.raises(InputError, match="file is empty"):
        read_table(write(tmp_path / "items.csv", content), ITEMS)


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="header but no rows"):
        read_table(write(tmp_path / "items.csv", "item_id,description\n"), ITEMS)


def test_wrong_encoding_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path / "catalog.csv", "catalog_id,description\n1,Plain\n2,Caf\u00e9 cr\u00e8me\n", encoding="latin-1")
    with pytest.raises(InputError) as err:
        read_table(path, CATALOG)
    assert "row 2" in str(err.value) and "not valid utf-8" in str(err.value)
    frame = read_table(path, CATALOG, encoding="latin-1")
    assert frame.loc[1, "description"] == "Caf\u00e9 cr\u00e8me"


def test_unsupported_and_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unsupported file type"):
        read_table(write(tmp_path / "items.xlsx", "x"), ITEMS)
    with pytest.raises(InputError, match="cannot be read"):
        read_table(tmp_path / "missing.csv", ITEMS)
    with pytest.raises(InputError, match="not a readable Parquet"):
        read_table(write(tmp_path / "items.parquet", "not parquet"), ITEMS)


def test_parquet_and_jsonl(tmp_path: Path) -> None:
    frame = pd.DataFrame({"item_id": [1, 2], "description": ["Drill", "Saw"], "gtin": [None, "0012345678905"]})
    frame.to_parquet(tmp_path / "items.parquet")
    parsed = read_table(tmp_path / "items.parquet", ITEMS)
    assert parsed["item_id"].tolist() == ["1", "2"]
    assert parsed["gtin"].tolist() == [None, "0012345678905"]

    lines = "\n".join(json.dumps(r) for r in [{"item_id": "a", "description": "Drill", "color": "red"}, {"item_id": "b", "description": "Saw"}])
    parsed = read_table(write(tmp_path / "items.jsonl", lines + "\n"), ITEMS)
    assert parsed["item_id"].tolist() == ["a", "b"] and parsed.loc[0, "color"] == "red"


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "items.jsonl", '{"item_id": "a", "description": "x"}\n{"item_id": "b", \n')
    with pytest.raises(InputError) as err:
        read_table(path, ITEMS)
    assert "row 2" in str(err.value) and "not valid JSON" in str(err.value)


def test_mapping_to_unknown_field_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,description\n1,a\n")
    with pytest.raises(InputError, match="unknown field 'sku'"):
        read_table(path, ITEMS, columns={"sku": "item_id"})


def test_a_mapping_that_makes_a_column_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "item_id,description,Name\n1,a,b\n")
    with pytest.raises(InputError, match="column 'description': column appears twice"):
        read_table(path, ITEMS, columns={"description": "Name"})


def test_limits_are_per_kind_of_column(tmp_path: Path) -> None:
    from matching_pipeline.core.readers import FieldLimits

    limits = FieldLimits(text=12, field=5)
    ok = write(tmp_path / "ok.csv", "item_id,description,part_number,notes\n12345,twelve chars,ABCDE,twelve chars\n")
    assert read_table(ok, ITEMS, limits=limits)["description"].tolist() == ["twelve chars"]
    over = write(tmp_path / "over.csv", "item_id,description,part_number,notes\n123456,thirteen char,ABCDEF,thirteen char\n")
    with pytest.raises(InputError) as err:
        read_table(over, ITEMS, limits=limits)
    message = str(err.value)
    for column, length, limit in (("item_id", 6, 5), ("description", 13, 12), ("part_number", 6, 5), ("notes", 13, 12)):
        assert f"row 1, column '{column}': value is {length} characters long; the limit is {limit}" in message
    catalog = write(tmp_path / "catalog.csv", "catalog_id,description\nc1,thirteen char\n")
    with pytest.raises(InputError, match="column 'description': value is 13 characters"):
        read_table(catalog, CATALOG, limits=limits)


def test_parquet_index_columns_are_data_or_dropped(tmp_path: Path) -> None:
    pd.DataFrame({"item_id": ["a", "b"], "description": ["x", "y"]}).set_index("item_id").to_parquet(tmp_path / "named.parquet")
    assert read_table(tmp_path / "named.parquet", ITEMS)["item_id"].tolist() == ["a", "b"]
    pd.DataFrame({"item_id": ["a", "b"], "description": ["x", "y"]}, index=[5, 7]).to_parquet(tmp_path / "unnamed.parquet")
    frame = read_table(tmp_path / "unnamed.parquet", ITEMS)
    assert "__index_level_0__" not in frame.columns and frame["item_id"].tolist() == ["a", "b"]


def test_unexpected_failures_become_input_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matching_pipeline.core import readers

    def broken(*args, **kwargs):
        raise MemoryError("out of memory while parsing")

    monkeypatch.setattr(readers.pd, "read_csv", broken)
    with pytest.raises(InputError, match=r"items.csv: could not be read \(MemoryError: out of memory while parsing\)"):
        read_table(write(tmp_path / "items.csv", "item_id,description\n1,a\n"), ITEMS)
