"""Evaluation of a project's decisions against the user's own labels.

Thresholds do not transfer between product data sets (settings with precision 0.99 on one
benchmark gave 0.65 on another), so the only honest figure for a customer's data is measured on
labels of that data. This module turns labels and the per-stage decisions of a project into:

- precision, coverage and recall of the final answer and of each stage's own accepts, by stage
  and by method;
- candidate recall@k of what each stage left unmatched (is the right entry among the candidates
  the next stage or a reviewer will see?);
- a sweep of the enhanced stage's fuzzy accepts over ``threshold_match_score`` and
  ``threshold_margin``, and a suggestion: the setting with the highest coverage whose precision
  on the labels reaches a target.

Label semantics. A labelled pair ``(item, catalog_id)`` with label ``match`` (or no label) says
that pair is right, and, since an item names one product, that every entry not labelled a match
for that item is wrong (a catalog holding the product twice gets two match rows). ``non-match``
says only that pair is wrong. A ``match`` whose catalog id is empty or ``none`` says the item has
no entry in the catalog, so any accept of it is wrong. An accept whose correctness the labels do
not settle is *unlabelled*: it counts in coverage, never in precision, and every figure says how
many there were.

Pure: no Dagster, no database, no plotting; the callers load decisions and draw.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from matching_pipeline.core.models import HUMAN_STAGE, RESULT_STAGES, Decision
from matching_pipeline.core.readers import InputError, Problem

STAGE_ORDER: tuple[str, ...] = RESULT_STAGES
"""Later wins: the final answer of an item is the decision of its latest stage (a person's
above all), as in the ``final_matches`` view."""

SWEEP_STAGE = "enhanced"
FUZZY_METHOD = "fuzzy"
RECALL_KS: tuple[int, ...] = (1, 3, 5, 10)

MATCH_WORDS = frozenset({"", "match", "1", "true", "yes", "y"})
NON_MATCH_WORDS = frozenset({"non-match", "nonmatch", "non_match", "non match", "0", "false", "no", "n"})
NO_MATCH_IDS = frozenset({"", "none"})
"""Catalog ids (compared case-insensitively) that mean "this item has no entry in the catalog"."""

REQUIRED_COLUMNS = ("item_id", "catalog_id")

MIN_LABELLED_ACCEPTS = 30
"""Fewest labelled accepts on which a setting may be suggested. Below it one wrong accept moves
precision by more than three points, and a "reaches 0.99" would be luck, not evidence."""

DEFAULT_SCORE_GRID: tuple[float, ...] = tuple(round(0.30 + 0.05 * i, 2) for i in range(14))  # 0.30 .. 0.95
DEFAULT_MARGIN_GRID: tuple[float, ...] = tuple(round(0.025 * i, 3) for i in range(13))  # 0 .. 0.30


# -- labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """One statement about an item: ``catalog_id`` is (``match``) or is not its entry.

    ``catalog_id`` None with ``match`` True: the item has no entry in the catalog.
    ``row`` is the 1-based data row of the labels file (header excluded), None for a human
    decision from the review loop.
    """

    item_id: str
    catalog_id: str | None
    match: bool = True
    source: str = "file"
    row: int | None = None


@dataclass
class Truth:
    """What the labels say about one item."""

    matches: set[str] = field(default_factory=set)
    """The item's right catalog ids (usually one; more when the catalog lists the product twice)."""
    no_match: bool = False
    """The item has no entry in the catalog."""
    wrong: set[str] = field(default_factory=set)
    """Catalog ids labelled non-match for the item."""

    def verdict(self, catalog_id: str) -> bool | None:
        """Whether accepting ``catalog_id`` is right; None when the labels do not say."""
        if self.no_match:
            return False
        if self.matches:
            return catalog_id in self.matches
        if catalog_id in self.wrong:
            return False
        return None

    def agrees(self, label: Label) -> bool:
        """Whether ``label`` can be added without contradicting what is known."""
        if label.match and label.catalog_id is None:
            return not self.matches
        if label.match:
            assert label.catalog_id is not None
            return (
                not self.no_match
                and (not self.matches or label.catalog_id in self.matches)
                and label.catalog_id not in self.wrong
            )
        return label.catalog_id not in self.matches

    def add(self, label: Label) -> None:
        if label.match and label.catalog_id is None:
            self.no_match = True
        elif label.match:
            assert label.catalog_id is not None
            self.matches.add(label.catalog_id)
        else:
            assert label.catalog_id is not None
            self.wrong.add(label.catalog_id)


@dataclass
class LabelSet:
    """The labels of a project, merged from the file and from human decisions."""

    truth: dict[str, Truth]
    file_rows: int = 0
    human_decisions: int = 0
    human_overridden: list[str] = field(default_factory=list)
    """Items whose human decision contradicts the labels file: the file wins (it is the set the
    user curated for evaluation), and these are counted so the disagreement is visible."""

    def summary(self) -> dict[str, Any]:
        return {
            "file_rows": self.file_rows,
            "human_decisions": self.human_decisions,
            "human_overridden_by_file": len(self.human_overridden),
            "human_overridden_items": self.human_overridden[:20],
            "items_labelled": len(self.truth),
            "items_with_match": sum(bool(t.matches) for t in self.truth.values()),
            "items_without_match": sum(t.no_match for t in self.truth.values()),
            "non_match_pairs": sum(len(t.wrong) for t in self.truth.values()),
        }


def merge_labels(file_labels: Iterable[Label], human_labels: Iterable[Label] = ()) -> LabelSet:
    """Merge the file's labels (already consistent, see :func:`read_labels`) with human decisions.

    Human decisions are labels too. Where one contradicts the file for the same item, the file
    wins and the item is listed in ``human_overridden``.
    """
    truth: dict[str, Truth] = {}
    file_count = 0
    for label in file_labels:
        file_count += 1
        truth.setdefault(label.item_id, Truth()).add(label)
    human_count = 0
    overridden: list[str] = []
    for label in human_labels:
        human_count += 1
        known = truth.setdefault(label.item_id, Truth())
        if known.agrees(label):
            known.add(label)
        else:
            overridden.append(label.item_id)
    return LabelSet(truth, file_rows=file_count, human_decisions=human_count, human_overridden=overridden)


def human_labels(choices: Iterable[tuple[str, str | None]]) -> list[Label]:
    """A person's review decisions ``(item_id, catalog_id)`` as labels: the chosen entry is
    right, or, for "none of these" (no catalog id), the item has no entry in the catalog. The
    reviewer saw the machine's candidates and refused them all; a later accept of any entry
    for that item is therefore counted wrong."""
    return [
        Label(str(item_id), None if catalog_id is None else str(catalog_id), True, source=HUMAN_STAGE)
        for item_id, catalog_id in choices
    ]


def _label_value(raw: str) -> bool | None:
    word = raw.strip().lower()
    if word in MATCH_WORDS:
        return True
    if word in NON_MATCH_WORDS:
        return False
    return None


def read_labels(
    path: Path | str,
    *,
    item_ids: Collection[str],
    catalog_ids: Collection[str] | None = None,
    project: str | None = None,
    encoding: str = "utf-8",
) -> list[Label]:
    """Read a labels CSV (``item_id,catalog_id[,label]``), refusing it whole on any bad row.

    Every problem names its row: unknown item ids (not in ``item_ids``), unknown catalog ids
    (when ``catalog_ids`` is given), bad label values, duplicate pairs, and an item given two
    claims that exclude each other. A half-read labels file would bias every figure silently.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        raise InputError(path, [Problem(f"labels must be a CSV file, not {path.suffix or 'a file without suffix'!r}")])
    try:
        text = path.read_bytes().decode(encoding)
    except OSError as exc:
        raise InputError(path, [Problem(f"cannot be read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise InputError(path, [Problem(f"byte {exc.start} is not valid {encoding}")]) from exc
    if not text.strip():
        raise InputError(path, [Problem("file is empty")])
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.ParserError as exc:
        raise InputError(path, [Problem(f"not valid CSV ({exc})")]) from exc
    # Spreadsheet exports often start with a byte-order mark; it is not part of the column name.
    frame.columns = [str(c).lstrip("\ufeff").strip().lower() for c in frame.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        found = ", ".join(frame.columns) or "none"
        raise InputError(path, [Problem(f"required column is missing (found: {found})", column=c) for c in missing])
    if frame.empty:
        raise InputError(path, [Problem("file has a header but no rows")])

    known_items = set(item_ids)
    known_catalog = set(catalog_ids) if catalog_ids is not None else None
    where = f" (not in project {project!r})" if project else ""
    problems: list[Problem] = []
    labels: list[Label] = []
    pair_rows: dict[tuple[str, str | None], int] = {}
    no_entry_rows: dict[str, int] = {}
    match_rows: dict[str, int] = {}
    has_label = "label" in frame.columns
    for index, record in enumerate(frame.to_dict("records")):
        row = index + 1
        item_id = str(record["item_id"]).strip()
        raw_catalog = str(record["catalog_id"]).strip()
        catalog_id = None if raw_catalog.lower() in NO_MATCH_IDS else raw_catalog
        raw_label = str(record["label"]) if has_label else ""
        is_match = _label_value(raw_label)
        before = len(problems)
        if not item_id:
            problems.append(Problem("item_id is empty", row=row, column="item_id"))
        elif item_id not in known_items:
            problems.append(Problem(f"unknown item id {item_id!r}{where}", row=row, column="item_id"))
        if catalog_id is not None and known_catalog is not None and catalog_id not in known_catalog:
            problems.append(Problem(f"unknown catalog id {catalog_id!r} (not in the catalog)", row=row, column="catalog_id"))
        if is_match is None:
            problems.append(
                Problem(f"label {raw_label.strip()!r} is not 'match' or 'non-match' (or empty for match)", row=row, column="label")
            )
        elif not is_match and catalog_id is None:
            problems.append(Problem("a non-match label needs a catalog id", row=row, column="catalog_id"))
        if len(problems) > before or not item_id:
            continue
        first = pair_rows.setdefault((item_id, catalog_id), row)
        if first != row:
            problems.append(
                Problem(f"duplicate row: item {item_id!r} with catalog id {raw_catalog!r} is already labelled in row {first}", row=row)
            )
            continue
        if is_match:
            # Two right entries are fine (a duplicated product); "no entry" and an entry are not.
            if catalog_id is None and item_id in match_rows:
                problems.append(Problem(f"item {item_id!r} has a match in row {match_rows[item_id]}, so it cannot have no entry", row=row))
                continue
            if catalog_id is not None and item_id in no_entry_rows:
                problems.append(Problem(f"item {item_id!r} has no entry in the catalog by row {no_entry_rows[item_id]}", row=row))
                continue
            (no_entry_rows if catalog_id is None else match_rows).setdefault(item_id, row)
        labels.append(Label(item_id, catalog_id, bool(is_match), row=row))
    if problems:
        problems.sort(key=lambda p: (p.row or 0, p.column or ""))
        raise InputError(path, problems)
    return labels


# -- figures ---------------------------------------------------------------------------------


def wilson_lower_bound(correct: int, n: int, z: float = 1.96) -> float | None:
    """Lower end of the 95% Wilson interval of a proportion: how low precision could plausibly
    be given so few labels. None without labels."""
    if n == 0:
        return None
    p = correct / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return round((centre - spread) / (1 + z * z / n), 4)


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def _figures(correct: int, wrong: int, accepts: int, *, items: int, positives: int) -> dict[str, Any]:
    labelled = correct + wrong
    return {
        "accepts": accepts,
        "labelled": labelled,
        "correct": correct,
        "wrong": wrong,
        "unlabelled": accepts - labelled,
        "precision": _ratio(correct, labelled),
        "precision_lower_95": wilson_lower_bound(correct, labelled),
        "coverage": _ratio(accepts, items),
        "recall": _ratio(correct, positives),
    }


def _score(pairs: Iterable[tuple[str, str]], truth: Mapping[str, Truth], *, items: int, positives: int) -> dict[str, Any]:
    """Figures for a set of accepts ``(item_id, catalog_id)``."""
    accepts = correct = wrong = 0
    for item_id, catalog_id in pairs:
        accepts += 1
        known = truth.get(item_id)
        verdict = known.verdict(catalog_id) if known else None
        correct += verdict is True
        wrong += verdict is False
    return _figures(correct, wrong, accepts, items=items, positives=positives)


@dataclass(frozen=True)
class _Accept:
    stage: str
    method: str
    item_id: str
    catalog_id: str


def _accepts(answers: Mapping[str, tuple[str, Decision]], items: Collection[str]) -> list[_Accept]:
    """The accepts among ``{item_id: (stage, decision)}``, for items of the project."""
    return [
        _Accept(stage, decision.method, item_id, decision.catalog_id)
        for item_id, (stage, decision) in answers.items()
        if decision.catalog_id is not None and item_id in items
    ]


def _stage_rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else len(STAGE_ORDER)


def final_decisions(decisions: Mapping[str, Mapping[str, Decision]]) -> dict[str, tuple[str, Decision]]:
    """Each item's final answer ``(stage, decision)``: its latest stage's decision."""
    final: dict[str, tuple[str, Decision]] = {}
    for stage in sorted(decisions, key=_stage_rank):
        for item_id, decision in decisions[stage].items():
            final[item_id] = (stage, decision)
    return final


def candidate_recall(
    decisions: Mapping[str, Decision], truth: Mapping[str, Truth], ks: Sequence[int] = RECALL_KS
) -> dict[str, Any]:
    """Of the items a stage left unmatched whose right entry is labelled, the share with that
    entry among the first k saved candidates (in the order the next stage receives them)."""
    ranks: list[int | None] = []
    for item_id, decision in decisions.items():
        known = truth.get(item_id)
        if decision.matched or known is None or not known.matches:
            continue
        ids = [c.catalog_id for c in decision.candidates]
        ranks.append(next((rank for rank, c in enumerate(ids, start=1) if c in known.matches), None))
    n = len(ranks)
    return {
        "items": n,
        "recall_at": {str(k): _ratio(sum(r is not None and r <= k for r in ranks), n) for k in ks},
        "among_saved": _ratio(sum(r is not None for r in ranks), n),
    }


@dataclass(frozen=True)
class _FuzzyChance:
    """What a fuzzy accept of one item would be at some thresholds."""

    item_id: str
    catalog_id: str
    score: float
    margin: float
    conflict: bool


def _best_candidate(decision: Decision) -> str | None:
    best = decision.evidence.get("best_catalog_id")
    if best:
        return str(best)
    if decision.matched and decision.method == FUZZY_METHOD:
        return decision.catalog_id
    # Before the stage recorded ``best_catalog_id``: the highest re-scored candidate it saved.
    return max(decision.candidates, key=lambda c: c.score).catalog_id if decision.candidates else None


def _fuzzy_chance(item_id: str, decision: Decision) -> _FuzzyChance | None:
    evidence = decision.evidence
    best_score = evidence.get("best_score")
    catalog_id = _best_candidate(decision)
    if decision.error is not None or best_score is None or catalog_id is None:
        return None
    runner_up = evidence.get("runner_up_score")
    # The stage tests best - runner_up against the margin; the stored ``margin`` is rounded.
    margin = float(best_score) - float(runner_up) if runner_up is not None else float(evidence.get("margin") or 0.0)
    return _FuzzyChance(item_id, catalog_id, float(best_score), margin, bool(evidence.get("conflict")))


def threshold_sweep(
    decisions: Mapping[str, Decision],
    truth: Mapping[str, Truth],
    *,
    items: int,
    positives: int,
    score_grid: Sequence[float] = DEFAULT_SCORE_GRID,
    margin_grid: Sequence[float] = DEFAULT_MARGIN_GRID,
) -> list[dict[str, Any]]:
    """Precision and coverage of the enhanced stage's accepts at each ``(score, margin)``.

    An item would be a fuzzy accept at ``(t, m)`` iff its best candidate scores at least ``t``,
    leads the runner-up by at least ``m`` and no conflict with it is recorded. Identifier accepts
    do not depend on these thresholds and count at every point. Each point gives the stage's
    figures (identifier + fuzzy accepts) and, under ``fuzzy``, those of its fuzzy accepts alone.
    """
    fixed: list[tuple[str, str]] = []
    chances: list[_FuzzyChance] = []
    for item_id, decision in decisions.items():
        if decision.catalog_id is not None and decision.method != FUZZY_METHOD:
            fixed.append((item_id, decision.catalog_id))
        elif (chance := _fuzzy_chance(item_id, decision)) is not None and not chance.conflict:
            chances.append(chance)
    fixed_figures = _score(fixed, truth, items=items, positives=positives)
    verdicts = [truth[c.item_id].verdict(c.catalog_id) if c.item_id in truth else None for c in chances]
    points: list[dict[str, Any]] = []
    for t in sorted(set(score_grid)):
        for m in sorted(set(margin_grid)):
            correct = wrong = accepts = 0
            for chance, verdict in zip(chances, verdicts, strict=True):
                if chance.score >= t and chance.margin >= m:
                    accepts += 1
                    correct += verdict is True
                    wrong += verdict is False
            stage = _figures(
                fixed_figures["correct"] + correct,
                fixed_figures["wrong"] + wrong,
                fixed_figures["accepts"] + accepts,
                items=items,
                positives=positives,
            )
            points.append(
                {
                    "threshold_match_score": t,
                    "threshold_margin": m,
                    **stage,
                    "fuzzy": _figures(correct, wrong, accepts, items=items, positives=positives),
                }
            )
    return points


def suggest(
    points: Sequence[dict[str, Any]],
    *,
    target_precision: float,
    current: Mapping[str, float] | None = None,
    min_labelled: int = MIN_LABELLED_ACCEPTS,
) -> dict[str, Any]:
    """The sweep point with the highest coverage whose precision reaches the target.

    Only points with at least ``min_labelled`` labelled accepts qualify. Among equal coverage the
    higher precision wins, then the larger margin and score: on the labels they accept the same,
    and on data nobody labelled the stricter setting is the safer one.
    """
    out: dict[str, Any] = {"target_precision": target_precision, "min_labelled_accepts": min_labelled, "reached": False}
    setting = (current["threshold_match_score"], current["threshold_margin"]) if current else None
    now = next((p for p in points if (p["threshold_match_score"], p["threshold_margin"]) == setting), None)
    if now is not None:
        out["current"] = _brief(now)
    if not points:
        out["message"] = "no enhanced-stage decisions to sweep"
        return out
    enough = [p for p in points if p["labelled"] >= min_labelled]
    if not enough:
        most = max(p["labelled"] for p in points)
        out["message"] = (
            f"too few labels to suggest thresholds: at most {most} of the enhanced stage's accepts are labelled "
            f"at any setting, and at least {min_labelled} are needed; label more items"
        )
        return out
    reaching = [p for p in enough if p["precision"] is not None and p["precision"] >= target_precision]
    if not reaching:
        best = max(enough, key=lambda p: (p["precision"] or 0.0, p["coverage"] or 0.0))
        out["best"] = _brief(best)
        identifier_only = min(points, key=lambda p: p["fuzzy"]["accepts"])
        note = ""
        fixed_precision = identifier_only["precision"] if identifier_only["fuzzy"]["accepts"] == 0 else None
        if fixed_precision is not None and fixed_precision < target_precision:
            note = f"; identifier accepts alone, which no threshold changes, have precision {fixed_precision:.3f}"
        out["message"] = (
            f"no setting reaches precision {target_precision:g} on the labels; the best is {best['precision']:.3f} "
            f"(coverage {best['coverage']:.3f}) at threshold_match_score={best['threshold_match_score']:g}, "
            f"threshold_margin={best['threshold_margin']:g}{note}"
        )
        return out
    chosen = max(
        reaching,
        key=lambda p: (p["coverage"] or 0.0, p["precision"] or 0.0, p["threshold_margin"], p["threshold_match_score"]),
    )
    out.update(reached=True, **_brief(chosen))
    out["message"] = (
        f"threshold_match_score={chosen['threshold_match_score']:g}, threshold_margin={chosen['threshold_margin']:g}: "
        f"precision {chosen['precision']:.3f} on {chosen['labelled']} labelled accepts "
        f"(95% lower bound {chosen['precision_lower_95']:.3f}), coverage {chosen['coverage']:.3f}"
    )
    out["confident"] = chosen["precision_lower_95"] >= target_precision
    if not out["confident"]:
        out["message"] += (
            f"; caution: {chosen['labelled']} labelled accepts cannot rule out a precision as low as "
            f"{chosen['precision_lower_95']:.3f}, so label more items before relying on it"
        )
    return out


def _brief(point: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "threshold_match_score", "threshold_margin", "precision", "precision_lower_95",
        "coverage", "recall", "labelled", "unlabelled", "accepts",
    )
    return {k: point[k] for k in keys}


def evaluate(
    item_ids: Sequence[str],
    decisions: Mapping[str, Mapping[str, Decision]],
    labels: LabelSet,
    *,
    current: Mapping[str, float],
    target_precision: float = 0.99,
    ks: Sequence[int] = RECALL_KS,
    score_grid: Sequence[float] = DEFAULT_SCORE_GRID,
    margin_grid: Sequence[float] = DEFAULT_MARGIN_GRID,
    min_labelled: int = MIN_LABELLED_ACCEPTS,
    listed_wrong: int = 50,
) -> dict[str, Any]:
    """Every figure of the evaluation report, JSON-ready.

    ``decisions`` is ``{stage: {item_id: Decision}}`` (the human stage included when there is
    one); ``current`` holds the enhanced stage's ``threshold_match_score`` and
    ``threshold_margin`` in use, marked in the sweep.

    ``automatic`` is the answer the cascade gave before any person's decision: the precision a
    user gets from the pipeline alone, and the figure the target applies to. Human decisions are
    labels; leaving out the items a person corrected would drop exactly the machine's mistakes.
    """
    items = len(item_ids)
    project_items = set(item_ids)
    truth = {k: v for k, v in labels.truth.items() if k in project_items}
    positives = sum(bool(t.matches) for t in truth.values())
    final_accepts = _accepts(final_decisions(decisions), project_items)
    automatic = _accepts(final_decisions({k: v for k, v in decisions.items() if k != HUMAN_STAGE}), project_items)

    def score(accepts: Iterable[_Accept]) -> dict[str, Any]:
        return _score(((a.item_id, a.catalog_id) for a in accepts), truth, items=items, positives=positives)

    def grouped(accepts: Iterable[_Accept], key: Callable[[_Accept], str]) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[_Accept]] = defaultdict(list)
        for accept in accepts:
            groups[key(accept)].append(accept)
        return {name: score(members) for name, members in groups.items()}

    def summary(accepts: list[_Accept]) -> dict[str, Any]:
        return {
            **score(accepts),
            "by_stage": grouped(accepts, lambda a: a.stage),
            "by_method": grouped(accepts, lambda a: f"{a.stage}/{a.method}"),
        }

    stages: dict[str, Any] = {}
    for stage in sorted(decisions, key=_stage_rank):
        own = _accepts({i: (stage, d) for i, d in decisions[stage].items()}, project_items)
        decided = sum(i in project_items for i in decisions[stage])
        entry: dict[str, Any] = {
            "decided": decided,
            "stage_match_rate": _ratio(len(own), decided),
            **score(own),
            "by_method": grouped(own, lambda a: a.method),
        }
        if stage != HUMAN_STAGE:
            entry["candidate_recall_of_unmatched"] = candidate_recall(
                {i: d for i, d in decisions[stage].items() if i in project_items}, truth, ks
            )
        stages[stage] = entry

    points = threshold_sweep(
        {i: d for i, d in decisions.get(SWEEP_STAGE, {}).items() if i in project_items},
        truth,
        items=items,
        positives=positives,
        score_grid=sorted({*score_grid, current["threshold_match_score"]}),
        margin_grid=sorted({*margin_grid, current["threshold_margin"]}),
    )
    wrong = [
        {
            "item_id": a.item_id,
            "stage": a.stage,
            "method": a.method,
            "catalog_id": a.catalog_id,
            "expected": " or ".join(sorted(truth[a.item_id].matches)) or ("none" if truth[a.item_id].no_match else None),
        }
        for a in automatic
        if a.item_id in truth and truth[a.item_id].verdict(a.catalog_id) is False
    ]
    return {
        "items": items,
        "labels": labels.summary() | {"items_labelled_in_project": len(truth), "items_with_match_in_project": positives},
        "target_precision": target_precision,
        "current_settings": dict(current),
        "final": summary(final_accepts),
        "automatic": summary(automatic),
        "stages": stages,
        "sweep": points,
        "suggestion": suggest(points, target_precision=target_precision, current=current, min_labelled=min_labelled),
        "wrong_accepts": wrong[:listed_wrong],
        "wrong_accepts_total": len(wrong),
    }
