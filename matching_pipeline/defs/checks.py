"""Asset checks on the stage assets: what a data engineer must see in the UI without opening metadata.

Every stage asset declares these checks and evaluates them at the end of each of its runs, over the
chunks that run wrote (see ``stages.materialize_chunks``), so the UI's Checks tab always describes
the latest work of the stage with no extra run to launch or schedule:

- ``error_rate``: per project, the share of the run's decisions that carry an error (a malformed
  model reply, a search that kept failing). Above ``MATCHING_CHECK_MAX_ERROR_RATE`` it warns.
- ``match_rate_drop``: per project, each batch the run touched against the mean match rate of the
  project's previous ``MATCHING_CHECK_RECENT_BATCHES`` batches (as of this stage). A fall of more
  than ``MATCHING_CHECK_MAX_MATCH_RATE_DROP`` warns: a file with shifted columns, another shop's
  naming, or a stale catalog shows up as a batch that suddenly matches far less.
- ``stage_configured`` (AI and web search only): warns when the stage had items to decide but no
  model / search provider, so it only passed them on. A skipped stage is then visibly skipped,
  while its chunks are still recorded as done so the cascade and the job status go on.

All three have severity WARN: they flag a batch for a person, they never block the next stage (a
blocking check would strand a whole batch on one flaky provider).

The checks are not partitioned: Dagster keeps one latest result per check, and a run spans many
chunks, so a result names the projects and batches it covers in its metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from matching_pipeline.results.store import ResultsDatabase
from matching_pipeline.settings import CheckThresholds

ERROR_RATE = "error_rate"
MATCH_RATE_DROP = "match_rate_drop"
STAGE_CONFIGURED = "stage_configured"


def stage_check_specs(asset_name: str, *, may_skip: bool) -> list[dg.AssetCheckSpec]:
    """The checks a stage asset declares (and must therefore yield in every run)."""
    specs = [
        dg.AssetCheckSpec(
            ERROR_RATE,
            asset=asset_name,
            description="Share of decisions with an error, per project, in the stage's latest run (WARN above MATCHING_CHECK_MAX_ERROR_RATE).",
        ),
        dg.AssetCheckSpec(
            MATCH_RATE_DROP,
            asset=asset_name,
            description=(
                "Each batch's match rate after this stage against the project's recent batches "
                "(WARN when it falls more than MATCHING_CHECK_MAX_MATCH_RATE_DROP below their mean)."
            ),
        ),
    ]
    if may_skip:
        specs.append(
            dg.AssetCheckSpec(
                STAGE_CONFIGURED,
                asset=asset_name,
                description="WARN when the stage had items to decide but nothing configured to decide them (they were passed on).",
            )
        )
    return specs


@dataclass
class RunTally:
    """What one run of a stage did, per project and batch, for the checks."""

    decided: dict[str, int]
    errors: dict[str, int]
    skipped: dict[str, int]
    batches: dict[str, set[int]]

    @classmethod
    def empty(cls) -> RunTally:
        return cls({}, {}, {}, {})

    def add(self, project: str, batch_id: int, *, decided: int, errors: int, skipped: int) -> None:
        self.decided[project] = self.decided.get(project, 0) + decided
        self.errors[project] = self.errors.get(project, 0) + errors
        self.skipped[project] = self.skipped.get(project, 0) + skipped
        self.batches.setdefault(project, set()).add(batch_id)


def error_rate_result(tally: RunTally, thresholds: CheckThresholds) -> dg.AssetCheckResult:
    rates = {p: round(tally.errors[p] / n, 4) for p, n in tally.decided.items() if n}
    over = sorted(p for p, rate in rates.items() if rate > thresholds.max_error_rate)
    return dg.AssetCheckResult(
        check_name=ERROR_RATE,
        passed=not over,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"error rate above {thresholds.max_error_rate:.1%} in {', '.join(over)}" if over else "error rate within bounds"
        ),
        metadata={
            "error_rate_by_project": rates,
            "errors_by_project": {p: tally.errors[p] for p in rates},
            "decided_by_project": {p: tally.decided[p] for p in rates},
            "threshold": thresholds.max_error_rate,
            "projects_over": ", ".join(over),
        },
    )


def match_rate_drop_result(
    db: ResultsDatabase, stage: str, tally: RunTally, thresholds: CheckThresholds
) -> dg.AssetCheckResult:
    """Each touched batch's match rate (as of ``stage``) against the mean of the project's
    previous ``recent_batches`` batches that this stage has worked on."""
    rows: list[dict[str, object]] = []
    for project, touched in sorted(tally.batches.items()):
        ids = sorted(b.id for b in db.list_batches(project))
        wanted: set[int] = set(touched)
        history: dict[int, list[int]] = {}
        for batch_id in touched:
            earlier = [i for i in ids if i < batch_id][-thresholds.recent_batches :]
            history[batch_id] = earlier
            wanted.update(earlier)
        rates = {b: matched / total for b, (total, matched) in db.batch_match_rates(project, stage, sorted(wanted)).items() if total}
        for batch_id in sorted(touched):
            if batch_id not in rates:
                continue
            past = [rates[b] for b in history[batch_id] if b in rates]
            mean = sum(past) / len(past) if past else None
            rows.append(
                {
                    "project": project,
                    "batch": f"b{batch_id:06d}",
                    "match_rate": round(rates[batch_id], 4),
                    "recent_mean": round(mean, 4) if mean is not None else None,
                    "recent_batches": len(past),
                    "drop": round(mean - rates[batch_id], 4) if mean is not None else None,
                }
            )
    dropped = [r for r in rows if isinstance(r["drop"], float) and r["drop"] > thresholds.max_match_rate_drop]
    description = (
        "; ".join(f"{r['project']} {r['batch']}: {r['match_rate']:.1%} vs recent {r['recent_mean']:.1%}" for r in dropped)
        if dropped
        else "no batch below its project's recent match rate"
    )
    return dg.AssetCheckResult(
        check_name=MATCH_RATE_DROP,
        passed=not dropped,
        severity=dg.AssetCheckSeverity.WARN,
        description=description,
        metadata={
            "batches": dg.MetadataValue.json(rows),
            "threshold": thresholds.max_match_rate_drop,
            "batches_dropped": ", ".join(f"{r['project']}:{r['batch']}" for r in dropped),
        },
    )


def stage_configured_result(skip_note: str | None, tally: RunTally) -> dg.AssetCheckResult:
    skipped = {p: n for p, n in tally.skipped.items() if n}
    return dg.AssetCheckResult(
        check_name=STAGE_CONFIGURED,
        passed=not skipped,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"stage skipped {sum(skipped.values())} item(s): {skip_note or 'not configured'}"
            if skipped
            else ("configured" if skip_note is None else "nothing was pending (the stage is not configured)")
        ),
        metadata={"skipped_items_by_project": skipped, "configured": skip_note is None},
    )


def stage_check_results(
    specs: Sequence[dg.AssetCheckSpec],
    db: ResultsDatabase,
    stage: str,
    tally: RunTally,
    thresholds: CheckThresholds,
    skip_note: str | None,
) -> list[dg.AssetCheckResult]:
    """One result for each of ``specs``: a stage asset's step must yield every check it declares."""
    makers: Mapping[str, Callable[[], dg.AssetCheckResult]] = {
        ERROR_RATE: lambda: error_rate_result(tally, thresholds),
        MATCH_RATE_DROP: lambda: match_rate_drop_result(db, stage, tally, thresholds),
        STAGE_CONFIGURED: lambda: stage_configured_result(skip_note, tally),
    }
    return [makers[spec.name]() for spec in specs]
