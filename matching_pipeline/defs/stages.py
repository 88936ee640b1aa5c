"""What every stage of the cascade shares: its spec, its run plan and its per-chunk loop.

Each stage is its own asset partitioned by chunk. A run covers many chunks (never one run per
chunk: Dagster's bookkeeping is about 30 ms per chunk per stage, a run's start-up seconds), and the
asset yields one ``AssetMaterialization`` per chunk as each is written, so the UI fills chunk by
chunk and a chunk finished before a crash stays finished. The asset returns no output: returning a
value from a multi-partition run through the IO manager fails, and would double the events.

Because the asset yields no output, Dagster would *skip* a downstream stage placed in the same
run. So stages never share a run: each has its own job, the cascade sensor starts the next stage
when a stage's run succeeds, and the stages have different backfill policies, which is what makes
Dagster's backfill daemon put them in separate runs too (a child waits for its parent's chunks).
"""


import itertools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg
import pandas as pd

from matching_pipeline.core.models import STAGES, Decision
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.settings import chunks_per_run
from matching_pipeline.store import ResultsDatabase, parse_chunk_key

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
TAG_PROJECT = "matching/project"
TAG_BATCH = "matching/batch"
TAG_JOB = "matching/job"
TAG_STAGES = "matching/stages"
"""Comma-separated stages the job should run; the cascade sensor starts the next one listed."""
TAG_PLAN = "matching/plan"
"""Every stage of the job, kept on runs whose ``matching/stages`` was narrowed (pause, retry)."""
TAG_CONTROL = "matching/control"
"""The last control action applied to the job: paused, resumed, canceled or failed."""
TAG_TRIGGER = "matching/trigger"
"""What started a run that is not part of the job's first pass: ``repair`` or ``catalog``."""
TAG_REDECIDE = "matching/redecide"
"""``failed``: decide only items this stage has no decision for or whose decision has an error;
``unmatched``: also those it decided without a match. Every other decision of the chunk is kept
as it is (used by retry-failed and the catalog-change re-run, see ``control.py``)."""


@dataclass(frozen=True)
class StageSpec:
    """How a stage is cut into runs and blocks.

    ``chunks_per_run`` bounds a run (and is the backfill policy's ``max_partitions_per_run``);
    ``chunks_per_block`` is how many chunks are decided together inside a run: large for the
    vectorised enhanced stage, smaller for the network stages so the UI fills steadily.
    """

    stage: str
    asset_name: str
    chunks_per_run: int
    chunks_per_block: int
    pool: str | None = None

    @property
    def job_name(self) -> str:
        return f"{self.stage}_job"

    @property
    def backfill_policy(self) -> dg.BackfillPolicy:
        return dg.BackfillPolicy.multi_run(self.chunks_per_run)


STAGE_SPECS: dict[str, StageSpec] = {
    spec.stage: spec
    for spec in (
        StageSpec("enhanced", "enhanced_matches", chunks_per_run("enhanced", 200), 50),
        StageSpec("ai", "ai_matches", chunks_per_run("ai", 100), 20, pool="openai"),
        StageSpec("web_search", "web_search_matches", chunks_per_run("web_search", 50), 10, pool="web_search"),
    )
}


class StageLogic(Protocol):
    """A stage as the per-chunk loop sees it. Implementations live in ``defs/assets``."""

    catalog_version: str | None

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        """Decide every row of ``pending`` (items no earlier stage matched), in order.

        ``earlier`` holds the previous stage's decision for each pending item (its candidates).
        """
        ...

    def chunk_metadata(self, decisions: Sequence[Decision]) -> dict[str, Any]:
        """Stage-specific metadata for one chunk (tokens, queries, cache hits...)."""
        ...


def plan_runs(keys: Sequence[str], per_run: int, ordered: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(first, last)`` chunk ranges of at most ``per_run`` chunks that cover exactly ``keys``.

    A run's partition range is resolved over every key between its ends in ``ordered`` (the
    partitions' order), so a range never spans a key outside ``keys``: planning over a sparse list
    must not redo the finished chunks in its gaps. ``ordered`` defaults to ``keys`` themselves, which
    is right when they are contiguous, as a batch's chunks are.
    """
    wanted = set(keys)
    ranges: list[tuple[str, str]] = []
    run: list[str] = []
    for key in ordered if ordered is not None else keys:
        if key in wanted:
            run.append(key)
            if len(run) == per_run:
                ranges.append((run[0], run[-1]))
                run = []
        elif run:
            ranges.append((run[0], run[-1]))
            run = []
    if run:
        ranges.append((run[0], run[-1]))
    return ranges


def run_tags(first: str, last: str, *, job_id: str, stages: Sequence[str]) -> dict[str, str]:
    batch, project, _ = parse_chunk_key(first)
    return {
        RANGE_START: first,
        RANGE_END: last,
        TAG_PROJECT: project,
        TAG_BATCH: f"b{batch:06d}",
        TAG_JOB: job_id,
        TAG_STAGES: ",".join(stages),
    }


def pending_items(
    db: ResultsDatabase, stage: str, keys: Sequence[str], frame: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, Decision]]:
    """Items of ``frame`` that no earlier stage matched, and the previous stage's decisions.

    Fails loudly when the previous stage has not decided a chunk yet: deciding it here would
    either skip identifier matching or redo it behind Dagster's back.
    """
    position = STAGES.index(stage)
    if position == 0:
        return frame, {}
    matched: set[str] = set()
    previous: dict[str, Decision] = {}
    for earlier in STAGES[:position]:
        results = db.stage_results(earlier, keys)
        if earlier == STAGES[position - 1]:
            missing = sorted(set(keys) - db.finished_chunks(earlier, keys))
            if missing:
                raise dg.Failure(
                    f"The {earlier} stage has no results for chunk(s) {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''}: materialise {STAGE_SPECS[earlier].asset_name} "
                    f"for them first."
                )
        for decisions in results.values():
            for item_id, decision in decisions.items():
                if decision.matched:
                    matched.add(item_id)
                else:
                    previous[item_id] = decision
    pending = frame[~frame["item_id"].isin(matched)]
    pending_ids = set(pending["item_id"])
    return pending, {k: v for k, v in previous.items() if k in pending_ids}


def _redecide_only(
    db: ResultsDatabase, stage: str, keys: Sequence[str], pending: pd.DataFrame, mode: str | None
) -> tuple[pd.DataFrame, dict[str, Decision]]:
    """Under ``TAG_REDECIDE``, split ``pending`` into items to decide again and decisions to keep."""
    if mode not in ("failed", "unmatched"):
        return pending, {}
    pending_ids = set(pending["item_id"])
    kept = {
        item_id: decision
        for decisions in db.stage_results(stage, keys).values()
        for item_id, decision in decisions.items()
        if item_id in pending_ids and decision.error is None and (mode == "failed" or decision.matched)
    }
    return pending[~pending["item_id"].isin(kept)], kept


def materialize_chunks(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    db: ResultsDatabase,
    make_logic: Callable[[], StageLogic],
) -> Iterator[dg.AssetMaterialization]:
    """Decide the run's chunks block by block, writing and reporting each chunk as it is done."""
    keys = list(context.partition_keys)
    logic = make_logic()
    matched_total = decided_total = 0
    for start in range(0, len(keys), spec.chunks_per_block):
        block = keys[start : start + spec.chunks_per_block]
        began = time.perf_counter()
        frame = db.load_chunk_items(block)
        pending, earlier = pending_items(db, spec.stage, block, frame)
        pending, kept = _redecide_only(db, spec.stage, block, pending, context.run.tags.get(TAG_REDECIDE))
        decisions = logic.decide(pending, earlier) if len(pending) else []
        if len(decisions) != len(pending):
            raise dg.Failure(f"{spec.stage} decided {len(decisions)} of {len(pending)} items")
        by_item = {**kept, **dict(zip(pending["item_id"], decisions, strict=True))}
        frames = {key: chunk for key, chunk in frame.groupby("chunk_key", sort=False)}
        ready = list(itertools.takewhile(lambda key: key in frames, block))
        per_chunk = {key: [by_item[i] for i in frames[key]["item_id"] if i in by_item] for key in ready}
        # One transaction for the block's chunks, written before any of them is reported: a chunk
        # Dagster shows as materialised always has its results, and a crash before the write
        # leaves the whole block to do again (idempotently).
        db.replace_results(spec.stage, per_chunk, logic.catalog_version)
        seconds_per_chunk = (time.perf_counter() - began) / len(block)
        for key, chunk_decisions in per_chunk.items():
            matched = sum(d.matched for d in chunk_decisions)
            matched_total += matched
            decided_total += len(chunk_decisions)
            items_in_chunk = len(frames[key])
            already = items_in_chunk - len(chunk_decisions)
            yield dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=key,
                metadata={
                    "items": items_in_chunk,
                    "decided": len(chunk_decisions),
                    "passed_through": already,
                    "matched": matched,
                    "stage_match_rate": round(matched / len(chunk_decisions), 4) if chunk_decisions else 0.0,
                    "match_rate": round((already + matched) / items_in_chunk, 4),
                    "errors": sum(d.error is not None for d in chunk_decisions),
                    "duration_s": round(seconds_per_chunk, 4),
                    "catalog_version": logic.catalog_version or "",
                    **logic.chunk_metadata(chunk_decisions),
                },
            )
        if len(ready) < len(block):
            raise dg.Failure(f"chunk {block[len(ready)]} has no items in the results database")
    context.log.info(
        f"{spec.stage}: {len(keys)} chunks, {decided_total} items decided, {matched_total} matched"
    )


def stage_asset(
    spec: StageSpec,
    *,
    deps: Sequence[str],
    description: str,
    resource_keys: set[str],
    make_logic: Callable[[dg.AssetExecutionContext], StageLogic],
) -> dg.AssetsDefinition:
    """Build a stage's asset; the stage modules only supply ``make_logic``."""

    @dg.asset(
        name=spec.asset_name,
        description=description,
        partitions_def=chunk_partitions,
        deps=list(deps),
        output_required=False,
        backfill_policy=spec.backfill_policy,
        pool=spec.pool,
        group_name="matching",
        kinds={"python"},
        required_resource_keys={"results", *resource_keys},
        tags={"matching/stage": spec.stage},
    )
    def _stage(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization]:
        yield from materialize_chunks(context, spec, context.resources.results.get(), lambda: make_logic(context))

    return _stage
