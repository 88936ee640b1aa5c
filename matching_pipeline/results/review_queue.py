"""The review loop: the open queue as a spreadsheet or JSON, and a person's decisions back in.

The queue itself lives in the results database (``review_reasons``, filled by the stages as they
write, see ``core/review.py``); this module is what the CLI (``matching-pipeline review``) and the
HTTP API share, so the file and the endpoint accept exactly the same decisions.

A person's decision is the ``human`` stage: it wins in ``final_matches`` and no stage run touches
it. An import is all or nothing: every row is checked first (item ids of the project, catalog ids
of the current catalog, duplicates, required columns), and a file with any problem is refused
whole, naming the rows, so a half-applied spreadsheet never leaves the results in a state nobody
chose.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from matching_pipeline.core.models import HUMAN_STAGE
from matching_pipeline.core.readers import InputError, Problem
from matching_pipeline.results.exports import FORMULA_TRIGGERS, write_csv
from matching_pipeline.results.store import OpenReview, ResultsDatabase

DECISION_COLUMN = "decision"
NONE_WORDS = frozenset({"none", "none of these"})
"""A decision meaning: the catalog has no entry for this item."""
ACCEPT_WORDS = frozenset({"this", "accept"})
"""A decision meaning: the proposed match (the ``catalog_id`` column) is right."""
DEFAULT_CANDIDATES = 10
"""Candidates per row in an export: the enhanced stage keeps ten for an unmatched item, and the
right entry is among the first ten for about 97% of the items it leaves."""
EVIDENCE_CHARS = 2000
"""Evidence is written as JSON, cut to this length: enough to read, small enough for a cell."""
ITEM_COLUMNS = ("item_id", "description", "part_number", "manufacturer", "gtin")


class UnknownItem(LookupError):
    """The item (or its project) does not exist."""


@dataclass(frozen=True)
class ImportOutcome:
    project: str
    applied: int
    matched: int
    none: int
    skipped: int
    """Rows left without a decision."""


def review_payload(review: OpenReview, *, candidates: int = DEFAULT_CANDIDATES) -> dict[str, Any]:
    """One open item as the API returns it."""
    decision = review.decision
    return {
        "itemId": review.item_id,
        "item": {name: review.item.get(name) for name in ITEM_COLUMNS} | {"extra": review.item.get("extra") or {}},
        "reason": review.reason,
        "reasonStage": review.reason_stage,
        "decision": {
            "stage": review.stage,
            "catalogId": decision.catalog_id,
            "method": decision.method,
            "confidence": decision.confidence,
            "evidence": decision.evidence,
        },
        "candidates": [c.to_dict() for c in decision.candidates[:candidates]],
    }


def review_frame(db: ResultsDatabase, project: str, *, candidates: int = DEFAULT_CANDIDATES) -> pd.DataFrame:
    """The open queue of ``project``, one row per item, with an empty ``decision`` column."""
    reviews = db.open_reviews(project)
    width = min(candidates, max((len(r.decision.candidates) for r in reviews), default=0))
    rows = []
    for review in reviews:
        decision = review.decision
        proposed = next((c for c in decision.candidates if c.catalog_id == decision.catalog_id), None)
        row: dict[str, Any] = {"project": project, **{name: review.item.get(name) for name in ITEM_COLUMNS}}
        row.update(
            reason=review.reason,
            reason_stage=review.reason_stage,
            stage=review.stage,
            catalog_id=decision.catalog_id,
            catalog_description=proposed.description if proposed else None,
            method=decision.method,
            confidence=decision.confidence,
            evidence=json.dumps(decision.evidence, default=str, ensure_ascii=False)[:EVIDENCE_CHARS],
        )
        for n in range(1, width + 1):
            candidate = decision.candidates[n - 1] if n <= len(decision.candidates) else None
            row[f"c{n}_id"] = candidate.catalog_id if candidate else None
            row[f"c{n}_description"] = candidate.description if candidate else None
            row[f"c{n}_part_number"] = candidate.part_number if candidate else None
            row[f"c{n}_score"] = round(candidate.score, 4) if candidate else None
        row[DECISION_COLUMN] = ""
        rows.append(row)
    columns = [
        "project", *ITEM_COLUMNS, "reason", "reason_stage", "stage", "catalog_id", "catalog_description",
        "method", "confidence", "evidence",
        *(f"c{n}_{part}" for n in range(1, width + 1) for part in ("id", "description", "part_number", "score")),
        DECISION_COLUMN,
    ]
    return pd.DataFrame(rows, columns=columns)


def export_review(db: ResultsDatabase, project: str, path: Path, *, candidates: int = DEFAULT_CANDIDATES) -> pd.DataFrame:
    """Write the open queue of ``project`` to ``path`` (CSV, formula-like cells neutralised)."""
    frame = review_frame(db, project, candidates=candidates)
    write_csv(frame, path)
    return frame


def import_review(
    db: ResultsDatabase,
    path: Path,
    catalog_ids: Callable[[], Collection[str]],
    *,
    project: str | None = None,
) -> ImportOutcome:
    """Apply the decisions of a filled-in review file, all of them or none.

    ``decision`` per row: a catalog id, ``none`` (no entry is this product), ``this`` or
    ``accept`` (the proposed ``catalog_id`` is right), or empty (skipped). ``catalog_ids`` is
    called only when some row names an id. Raises :class:`InputError` listing every problem.
    """
    path = Path(path)
    frame = _read(path)
    problems: list[Problem] = []
    required = ["item_id", DECISION_COLUMN] + ([] if project else ["project"])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(path, [Problem(f"missing column {c!r} (export the queue with `review export`)") for c in missing])
    frame = frame.map(_restored)
    if project is None:
        named = sorted(set(frame["project"]) - {""})
        if len(named) != 1:
            raise InputError(path, [Problem(f"the file must hold one project's rows, found {named or 'none'} in column 'project'")])
        project = named[0]
    elif "project" in frame.columns:
        problems += [
            Problem(f"project {value!r} is not {project!r}", row=row, column="project")
            for row, value in enumerate(frame["project"], start=1)
            if value and value != project
        ]
    decided = frame[frame[DECISION_COLUMN].str.strip() != ""]
    skipped = len(frame) - len(decided)

    rows = {int(index) + 1: record for index, record in zip(decided.index, decided.to_dict("records"), strict=True)}
    known_items = db.existing_item_ids(project, sorted({r["item_id"] for r in rows.values()}))
    if not known_items and rows and not db.list_batches(project):
        raise InputError(path, [Problem(f"project {project!r} has no items")])
    seen: dict[str, int] = {}
    current: dict[str, str] | None = None  # the answers now, read only if a row needs them
    choices: dict[str, str | None] = {}
    named_ids: dict[int, str] = {}
    for row, record in rows.items():
        item_id, word = record["item_id"], record[DECISION_COLUMN].strip()
        if not item_id:
            problems.append(Problem("item_id is empty", row=row, column="item_id"))
            continue
        if item_id in seen:
            problems.append(Problem(f"duplicate item_id {item_id!r} (also row {seen[item_id]})", row=row, column="item_id"))
            continue
        seen[item_id] = row
        if item_id not in known_items:
            problems.append(Problem(f"unknown item_id {item_id!r} in project {project!r}", row=row, column="item_id"))
            continue
        if word.lower() in NONE_WORDS:
            choices[item_id] = None
            continue
        if word.lower() in ACCEPT_WORDS:
            if "catalog_id" in record:  # what the person saw proposed
                proposed = record["catalog_id"].strip()
            else:
                if current is None:
                    answers = db.final_matches(project)
                    current = dict(zip(answers["item_id"], answers["catalog_id"].fillna(""), strict=True)) if len(answers) else {}
                proposed = current.get(item_id, "")
            if not proposed:
                problems.append(Problem(f"{word!r} but the item has no proposed match: give a catalog id or 'none'", row=row, column=DECISION_COLUMN))
                continue
            word = proposed
        choices[item_id] = word
        named_ids[row] = word
    if named_ids:
        known = catalog_ids()
        problems += [
            Problem(f"unknown catalog id {catalog_id!r} (not in the current catalog)", row=row, column=DECISION_COLUMN)
            for row, catalog_id in named_ids.items()
            if catalog_id not in known
        ]
    if problems:
        raise InputError(path, sorted(problems, key=lambda p: (p.row or 0)))
    applied = db.record_human_decisions(project, choices, source=f"review import {path.name}")
    matched = sum(v is not None for v in choices.values())
    return ImportOutcome(project, applied, matched, applied - matched, skipped)


def decide(
    db: ResultsDatabase, project: str, item_id: str, catalog_id: str | None, catalog_ids: Callable[[], Collection[str]], *, source: str
) -> dict[str, Any]:
    """Record one person's decision on one item (the API's ``POST .../review/{item_id}``).

    Raises :class:`UnknownItem` for an item not in ``project``, ``ValueError`` for a catalog id
    that is not in the current catalog.
    """
    if item_id not in db.existing_item_ids(project, [item_id]):
        raise UnknownItem(f"project {project!r} has no item {item_id!r}")
    if catalog_id is not None and catalog_id not in catalog_ids():
        raise ValueError(f"unknown catalog id {catalog_id!r} (not in the current catalog)")
    db.record_human_decisions(project, {item_id: catalog_id}, source=source)
    return {"itemId": item_id, "stage": HUMAN_STAGE, "catalogId": catalog_id}


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputError(path, [Problem("file not found")])
    try:
        # utf-8-sig: spreadsheets often save CSV with a byte-order mark.
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, [Problem(f"not a readable CSV file ({exc})")]) from None


def _restored(value: Any) -> Any:
    """Undo the export's formula neutralising (``'-5`` back to ``-5``), so ids round-trip."""
    if isinstance(value, str) and len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_TRIGGERS):
        return value[1:]
    return value

