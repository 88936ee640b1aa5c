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
from typing import Any, Protocol, runtime_checkable

import dagster as dg
import pandas as pd

from matching_pipeline.core.models import STAGES, Decision
from matching_pipeline.core.review import ReviewSettings
from matching_pipeline.defs.budget import ChunkTimeBudgetExceeded, Deadline
from matching_pipeline.defs.checks import RunTally, stage_check_results, stage_check_specs
from matching_pipeline.defs.partitions import chunk_partitions
from matching_pipeline.defs.tags import (
    RANGE_END,
    RANGE_START,
    STAGE_ASSET_TAG,
    TAG_BATCH,
    TAG_CONTROL,
    TAG_JOB,
    TAG_PROJECT,
    TAG_REDECIDE,
    TAG_STAGES,
)
from matching_pipeline.results.store import CHUNK_SIZE, ResultsDatabase, parse_chunk_key
from matching_pipeline.settings import check_thresholds, chunk_time_budget_seconds, chunks_per_run


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
    may_skip: bool = False
    """Whether the stage can run unconfigured (no model / provider) and then only pass items on."""

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
        StageSpec("ai", "ai_matches", chunks_per_run("ai", 100), 20, pool="openai", may_skip=True),
        StageSpec("web_search", "web_search_matches", chunks_per_run("web_search", 50), 10, pool="web_search", may_skip=True),
    )
}


class StageLogic(Protocol):
    """A stage as the per-chunk loop sees it. Implementations live in ``defs/assets``."""

    catalog_version: str | None

    def decide(self, pending: pd.DataFrame, earlier: Mapping[str, Decision]) -> list[Decision]:
        """Decide every row of ``pending`` (items with no match so far), in order.

        ``earlier`` holds each pending item's current decision (its candidates): the latest
        stage's, an accept flagged for a second opinion included (see :class:`VerifiesAccepts`).
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


def cut_by_work(
    keys: Sequence[str], pending_counts: Mapping[str, int], items_per_part: int, *, max_chunks: int | None = None
) -> list[list[str]]:
    """``keys`` in order, cut into parts that each hold about ``items_per_part`` pending items.

    A part closes once its chunks hold ``items_per_part`` pending items, or ``max_chunks`` chunks
    when given. A chunk missing from ``pending_counts`` (not yet known) counts as a full chunk,
    the safe guess. Serves both run ranges and the blocks inside a run.
    """
    if items_per_part < 1:
        raise ValueError("items_per_part must be at least 1")
    parts: list[list[str]] = []
    part: list[str] = []
    items = 0
    for key in keys:
        part.append(key)
        items += pending_counts.get(key, CHUNK_SIZE)
        if items >= items_per_part or (max_chunks is not None and len(part) >= max_chunks):
            parts.append(part)
            part, items = [], 0
    if part:
        parts.append(part)
    return parts


def plan_ranges_by_work(
    keys: Sequence[str], pending_counts: Mapping[str, int], items_per_run: int, *, max_chunks_per_run: int | None = None
) -> list[tuple[str, str]]:
    """``(first, last)`` ranges over the contiguous ``keys``, cut by pending *items*, not chunks.

    Chunks with nothing pending cost milliseconds each (they are recorded in bulk, see
    :func:`materialize_chunks`), so a stage where 250 items remain over 2,000 chunks becomes one
    or two runs instead of forty chunk-sized ones, each paying seconds of start-up for nothing.
    ``max_chunks_per_run`` bounds one run's bookkeeping (its planned and materialization events).
    """
    try:
        return [(part[0], part[-1]) for part in cut_by_work(keys, pending_counts, items_per_run, max_chunks=max_chunks_per_run)]
    except ValueError:
        raise ValueError("items_per_run must be at least 1") from None


def pending_counts(db: ResultsDatabase, stage: str, keys: Sequence[str], *, verify: bool = False) -> dict[str, int]:
    """``{chunk: items the stage would decide}`` for the chunks whose previous stage is done.

    The same rule as :func:`pending_items` (an item is settled by an earlier stage's match, unless
    ``verify`` and the accept asks for a second opinion), read for thousands of chunks in one
    lean query. Chunks the previous stage has not finished are left out: nobody can know yet.
    """
    position = STAGES.index(stage)
    if position == 0:
        return {key: len(by_item) for key, by_item in db.current_answers((), keys).items()}
    ready = db.finished_chunks(STAGES[position - 1], keys)
    answers = db.current_answers(STAGES[:position], [k for k in keys if k in ready])
    human = db.decided_by_a_person(list(answers))
    return {
        key: sum(
            item not in human and (d is None or not d.matched or (verify and wants_verify(d)))
            for item, d in by_item.items()
        )
        for key, by_item in answers.items()
    }





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


SKIPPED = "skipped"
"""Method of the pass-through record an unconfigured stage writes for an item it could not decide.

It is stored (so later stages, exports and status see the item went through the stage) but it is
not a decision: chunk metadata counts it as ``skipped_items``, never as ``decided``."""


@runtime_checkable
class MaySkip(Protocol):
    """A stage that can be unconfigured; ``skip_note`` says why it only passes items on (None: configured)."""

    skip_note: str | None


VERIFY_EVIDENCE = "verify"
"""Evidence key of an accept that asks for a second opinion (``True``; see :func:`wants_verify`)."""


def wants_verify(decision: Decision) -> bool:
    """Whether ``decision`` is an accept its stage flagged for a second opinion: the enhanced
    stage sets ``evidence["verify"]`` on fuzzy accepts scored below its verify score."""
    return decision.matched and decision.evidence.get(VERIFY_EVIDENCE) is True


@runtime_checkable
class VerifiesAccepts(Protocol):
    """A stage that can give the second opinion :func:`wants_verify` asks for (the AI stage, when
    a model is configured). Stages without this attribute never see an accepted item."""

    verifies_accepts: bool


def pending_items(
    db: ResultsDatabase, stage: str, keys: Sequence[str], frame: pd.DataFrame, *, verify: bool = False
) -> tuple[pd.DataFrame, dict[str, Decision]]:
    """Items of ``frame`` whose current answer is no match, and that answer's decision.

    An item's current answer is its latest stage's decision, as in the ``final_matches`` view:
    an accept that a later stage overturned (a second opinion that said none) is unmatched again.
    With ``verify``, accepts flagged for a second opinion (:func:`wants_verify`) are pending too,
    and their decision (with the accepted entry and its rivals as candidates) comes with them.

    Fails loudly when the previous stage has not decided a chunk yet: deciding it here would
    either skip identifier matching or redo it behind Dagster's back.
    """
    position = STAGES.index(stage)
    if position == 0:
        return frame, {}
    latest: dict[str, Decision] = {}
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
            latest.update(decisions)
    settled = {i for i, d in latest.items() if d.matched and not (verify and wants_verify(d))}
    # Nothing a later stage says can change a person's answer: a model call or a web search for
    # such an item only costs money (the enhanced stage, offline and free, still decides it).
    settled |= db.decided_by_a_person(keys)
    pending = frame[~frame["item_id"].isin(settled)]
    pending_ids = set(pending["item_id"])
    return pending, {k: v for k, v in latest.items() if k in pending_ids}


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


DEFAULT_REVIEW = ReviewSettings()
"""The review queue's default rules, when a caller passes none."""


def materialize_chunks(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    db: ResultsDatabase,
    make_logic: Callable[[], StageLogic],
    review: ReviewSettings = DEFAULT_REVIEW,
    checks: Sequence[dg.AssetCheckSpec] = (),
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckResult]:
    """Decide the run's chunks block by block, writing and reporting each chunk as it is done.

    Chunks where nothing is pending for the stage (earlier stages matched every item) are
    recorded first, all in one write, and reported without any per-chunk work: a stage's time
    then follows its pending items, not its chunk count. ``review`` says which decisions enter
    the review queue; the store applies it as it writes. ``checks`` (the asset's check specs, see
    ``defs/checks.py``) are evaluated over the run's chunks at the end.
    """
    keys = list(context.partition_keys)
    logic = make_logic()
    verify = isinstance(logic, VerifiesAccepts) and logic.verifies_accepts
    skip_note = logic.skip_note if isinstance(logic, MaySkip) else None
    tally = RunTally.empty()
    matched_total = decided_total = 0
    budget = chunk_time_budget_seconds()
    out_of_time: list[str] = []

    idle: list[str] = []
    counts: dict[str, int] = {}
    if STAGES.index(spec.stage) > 0:
        counts = pending_counts(db, spec.stage, keys, verify=verify)
        idle = [key for key in keys if counts.get(key) == 0]
    if idle:
        began = time.perf_counter()
        sizes = {key: len(by_item) for key, by_item in db.current_answers((), idle).items()}
        db.replace_results(spec.stage, {key: [] for key in idle}, logic.catalog_version, review)
        seconds_per_chunk = (time.perf_counter() - began) / len(idle)
        for key in idle:
            tally.add(*_project_batch(key), decided=0, errors=0, skipped=0)
            yield dg.AssetMaterialization(
                asset_key=context.asset_key,
                partition=key,
                metadata=_chunk_metadata(logic, sizes[key], [], 0, seconds_per_chunk, nothing_pending=True),
            )
        context.log.info(f"{spec.stage}: {len(idle)} chunk(s) had nothing pending; recorded in one write")
    skip = set(idle)
    busy = [key for key in keys if key not in skip]
    # Blocks hold about a full block's worth of *pending items*: with a few pending items per
    # chunk, a block of chunks_per_block chunks would send a handful of requests at a time and
    # the stage would be bound by latency instead of its rate limit.
    block_items = spec.chunks_per_block * CHUNK_SIZE
    blocks = cut_by_work(busy, counts, block_items, max_chunks=block_items)
    done_before = 0
    for block in blocks:
        _stop_if_canceled(context, block[0], len(busy) - done_before)
        done_before += len(block)
        began = time.perf_counter()
        frame = db.load_chunk_items(block)
        pending, earlier = pending_items(db, spec.stage, block, frame, verify=verify)
        pending, kept = _redecide_only(db, spec.stage, block, pending, context.run.tags.get(TAG_REDECIDE))
        try:  # see defs/budget.py: the block is interrupted at its deadline and nothing of it written
            with Deadline(budget * len(block)):
                decisions = logic.decide(pending, earlier) if len(pending) else []
        except ChunkTimeBudgetExceeded:
            context.log.error(
                f"{spec.stage}: chunks {block[0]} .. {block[-1]} ran out of time ({budget:g}s per chunk, "
                f"{budget * len(block):g}s for these {len(block)}); going on with the next chunks"
            )
            out_of_time.extend(block)
            continue
        if len(decisions) != len(pending):
            raise dg.Failure(f"{spec.stage} decided {len(decisions)} of {len(pending)} items")
        by_item = {**kept, **dict(zip(pending["item_id"], decisions, strict=True))}
        frames = {key: chunk for key, chunk in frame.groupby("chunk_key", sort=False)}
        ready = list(itertools.takewhile(frames.__contains__, block))
        per_chunk = {key: [by_item[i] for i in frames[key]["item_id"] if i in by_item] for key in ready}
        # One transaction for the block's chunks, written before any of them is reported: a chunk
        # Dagster shows as materialised always has its results, and a crash before the write
        # leaves the whole block to do again (idempotently).
        # The review queue's reasons are written in the same transaction (see core/review.py).
        to_review = db.replace_results(spec.stage, per_chunk, logic.catalog_version, review)
        seconds_per_chunk = (time.perf_counter() - began) / len(block)
        for key, chunk_decisions in per_chunk.items():
            metadata = _chunk_metadata(logic, len(frames[key]), chunk_decisions, to_review.get(key, 0), seconds_per_chunk)
            matched_total += metadata["matched"]
            decided_total += metadata["decided"]
            tally.add(*_project_batch(key), decided=metadata["decided"], errors=metadata["errors"], skipped=metadata["skipped_items"])
            yield dg.AssetMaterialization(asset_key=context.asset_key, partition=key, metadata=metadata)
        if len(ready) < len(block):
            raise dg.Failure(f"chunk {block[len(ready)]} has no items in the results database")
    skipped_total = sum(tally.skipped.values())
    context.log.info(
        f"{spec.stage}: {len(keys)} chunks, {decided_total} items decided, {matched_total} matched"
        + (f", {skipped_total} skipped ({skip_note})" if skipped_total else "")
    )
    yield from stage_check_results(checks, db, spec.stage, tally, check_thresholds(), skip_note)
    if out_of_time:
        raise dg.Failure(
            description=(
                f"{len(out_of_time)} chunk(s) ran out of time (MATCHING_CHUNK_TIME_BUDGET_SECONDS={budget:g}s per "
                f"chunk): {_ranges(out_of_time, keys)}; the run's other chunks are done. Re-run these alone "
                f"(matching-pipeline retry JOB, or a backfill of just them)."
            ),
            metadata={"out_of_time_chunks": dg.MetadataValue.text(",".join(out_of_time))},
        )


def _project_batch(key: str) -> tuple[str, int]:
    batch, project, _ = parse_chunk_key(key)
    return project, batch


def _chunk_metadata(
    logic: StageLogic,
    items_in_chunk: int,
    decisions: Sequence[Decision],
    to_review: int,
    seconds_per_chunk: float,
    *,
    nothing_pending: bool = False,
) -> dict[str, Any]:
    """One chunk's materialization metadata.

    ``decided`` counts real decisions only: a pass-through record of an unconfigured stage
    (method :data:`SKIPPED`) counts in ``skipped_items``, and ``skipped`` is true on such a chunk,
    so neither the UI, nor status, nor the checks mistake a skipped stage for a finished one.
    """
    skipped = sum(d.method == SKIPPED for d in decisions)
    real = [d for d in decisions if d.method != SKIPPED]
    matched = sum(d.matched for d in real)
    already = items_in_chunk - len(decisions)
    return {
        "items": items_in_chunk,
        "decided": len(real),
        "skipped": skipped > 0,
        "skipped_items": skipped,
        "nothing_pending": nothing_pending,
        "passed_through": already,
        "matched": matched,
        "stage_match_rate": round(matched / len(real), 4) if real else 0.0,
        "match_rate": round((already + matched) / items_in_chunk, 4) if items_in_chunk else 0.0,
        "errors": sum(d.error is not None for d in real),
        "to_review": to_review,
        "duration_s": round(seconds_per_chunk, 4),
        "catalog_version": logic.catalog_version or "",
        **logic.chunk_metadata(decisions),
    }


def _ranges(chunks: Sequence[str], ordered: Sequence[str]) -> str:
    """``a .. b, c .. d``: consecutive runs of ``chunks`` in ``ordered``, for a one-line message."""
    position = {key: i for i, key in enumerate(ordered)}
    spans: list[list[str]] = []
    for key in chunks:
        if spans and position[key] == position[spans[-1][-1]] + 1:
            spans[-1].append(key)
        else:
            spans.append([key])
    return ", ".join(span[0] if len(span) == 1 else f"{span[0]} .. {span[-1]}" for span in spans)


def _stop_if_canceled(context: dg.AssetExecutionContext, next_chunk: str, left: int) -> None:
    """Stop between blocks once the job is canceled (or the run is being canceled).

    Runs that the API server executes in process cannot be stopped by killing their process
    (it serves everyone), and any run's step may run on where its run worker is not told: the
    record is what every launch path shares, so the step reads it before each block.
    """
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is None:
        return
    control = run.tags.get(TAG_CONTROL)
    if control in ("canceled", "failed") or run.status == dg.DagsterRunStatus.CANCELING:
        what = f"job {control}" if control in ("canceled", "failed") else "run canceled"
        raise dg.Failure(f"{what}: stopped before chunk {next_chunk} ({left} chunk(s) not done)")


def stage_asset(
    spec: StageSpec,
    *,
    deps: Sequence[str],
    description: str,
    resource_keys: set[str],
    make_logic: Callable[[dg.AssetExecutionContext], StageLogic],
) -> dg.AssetsDefinition:
    """Build a stage's asset; the stage modules only supply ``make_logic``.

    A pooled stage also gets a twin outside its pool (see :func:`without_pool`).
    """

    def build(pool: str | None) -> dg.AssetsDefinition:
        return _stage_asset(spec, pool, deps=deps, description=description, resource_keys=resource_keys, make_logic=make_logic)

    if spec.pool:
        _WITHOUT_POOL[spec.asset_name] = build(None)
    return build(spec.pool)


_WITHOUT_POOL: dict[str, dg.AssetsDefinition] = {}


def without_pool(asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """The same stage asset outside its pool, for a stage that can only skip (no model or provider).

    A pool exists to share a rate limit; a stage with nothing configured sends no request, so its
    runs have no reason to queue one by one behind another project's long AI run for the slot.
    Which variant a code location gets is decided when its definitions are built, from the same
    settings that decide whether the stage skips.
    """
    return _WITHOUT_POOL.get(asset.key.to_user_string(), asset)


def _stage_asset(
    spec: StageSpec,
    pool: str | None,
    *,
    deps: Sequence[str],
    description: str,
    resource_keys: set[str],
    make_logic: Callable[[dg.AssetExecutionContext], StageLogic],
) -> dg.AssetsDefinition:
    checks = stage_check_specs(spec.asset_name, may_skip=spec.may_skip)

    @dg.asset(
        name=spec.asset_name,
        description=description,
        partitions_def=chunk_partitions,
        deps=list(deps),
        output_required=False,
        backfill_policy=spec.backfill_policy,
        pool=pool,
        group_name="matching",
        kinds={"python"},
        required_resource_keys={"results", *resource_keys},
        tags={STAGE_ASSET_TAG: spec.stage},
        check_specs=checks,
    )
    def _stage(context: dg.AssetExecutionContext) -> Iterator[dg.AssetMaterialization | dg.AssetCheckResult]:
        results = context.resources.results
        yield from materialize_chunks(context, spec, results.get(), lambda: make_logic(context), results.review(), checks)

    return _stage
