"""The ``matching-pipeline`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from matching_pipeline.core.models import STAGES
from matching_pipeline.core.readers import InputError
from matching_pipeline.settings import Settings, parse_column_map


EXIT_DATABASE_UNAVAILABLE = 3
"""Exit status when the results database or Dagster's storage could not be reached (see README)."""
EXIT_POOL_TIMEOUT = 4
"""Exit status when a pool stayed busy for MATCHING_POOL_WAIT_TIMEOUT_SECONDS."""


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if getattr(args, "catalog", None):
        overrides["catalog_path"] = Path(args.catalog).resolve()
    if getattr(args, "catalog_encoding", None):
        overrides["catalog_encoding"] = args.catalog_encoding
    if getattr(args, "catalog_columns", None):
        overrides["catalog_columns"] = parse_column_map(args.catalog_columns)
    if getattr(args, "encoding", None):
        overrides["items_encoding"] = args.encoding
    if getattr(args, "columns", None):
        overrides["item_columns"] = parse_column_map(args.columns)
    return dataclasses.replace(settings, **overrides)


def _instance(settings: Settings):
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.data_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"DAGSTER_HOME is not set; using {home}", file=sys.stderr)
    return dg.DagsterInstance.get()


def cmd_match(args: argparse.Namespace) -> int:
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.results.reports import export_results, format_summary
    from matching_pipeline.jobs.pools import reap_dead_runs
    from matching_pipeline.jobs.runner import ensure_partitions, new_job_id, run_stage

    settings = _settings(args)
    requested = args.stages.split(",") if args.stages else list(STAGES)
    unknown = [s for s in requested if s not in STAGES]
    if unknown:
        print(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return 2
    stages = [s for s in STAGES if s in requested]
    items_path = Path(args.items)
    if not settings.catalog_path.exists():
        print(f"catalog file not found: {settings.catalog_path}", file=sys.stderr)
        return 2
    db = open_results_database(settings.database_url)
    try:
        batch = ingest_file(
            db, items_path, args.project, encoding=settings.items_encoding, columns=settings.item_columns, limits=settings.field_limits
        )
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(
        f"{items_path.name}: batch {batch.label} of project {batch.project}, {batch.item_count} items in "
        f"{batch.chunk_count} chunks" + ("" if batch.is_new else " (same content as before: finishing what is left)")
    )

    defs = build_definitions(settings)
    instance = _instance(settings)
    reaped = reap_dead_runs(instance)  # runs an earlier, killed process left STARTED (and their pool slots)
    if reaped:
        print(f"marked {len(reaped)} run(s) failed whose process is gone: {', '.join(r[:8] for r in reaped)}")
    ensure_partitions(instance, batch.chunk_keys)
    try:
        _refresh_catalog(defs, instance, settings)
    except (InputError, RuntimeError) as exc:  # a bad catalog file is the user's to fix: say which and why
        print(str(exc), file=sys.stderr)
        return 2

    job_id = new_job_id(batch)
    failed = False
    notes: dict[str, str] = {}
    for stage in stages:
        keys = batch.chunk_keys
        if not args.force:
            done = db.finished_chunks(stage, keys)
            keys = [k for k in keys if k not in done]
        if not keys:
            print(f"[{stage}] all {batch.chunk_count} chunks already done")
            continue
        total = len(keys)
        progress = {"chunks": 0}

        def report(outcome, stage=stage, total=total, progress=progress) -> None:
            # A failed run's range is not done (some of its chunks may be; the re-run finds out).
            if outcome.success:
                progress["chunks"] += outcome.chunks
                state = "ok"
            else:
                state = f"FAILED ({outcome.chunks} chunks {outcome.first} .. {outcome.last}): {outcome.error}"
            print(f"[{stage}] {progress['chunks']}/{total} chunks  run {outcome.run_id[:8]}  {outcome.seconds:.1f}s  {state}", flush=True)

        outcomes = run_stage(defs, instance, stage, keys, job_id=job_id, stages=stages, on_run=report)
        note = _stage_note(instance, [o.run_id for o in outcomes])
        if note:
            notes[stage] = note
            print(f"[{stage}] {note}")
        if not all(o.success for o in outcomes):
            failed = True
            print(f"[{stage}] stopped; re-run the same command to finish only what is left", file=sys.stderr)
            break

    summary = db.project_summary(batch.project)
    summary["notes"] = notes
    print(format_summary(summary))
    if args.out:
        frame = export_results(db, batch.project, Path(args.out), batch_id=batch.id)
        print(f"wrote {len(frame)} rows to {args.out}")
    print(f"job {job_id}: runs are in the Dagster instance at {os.environ['DAGSTER_HOME']}")
    return 1 if failed else 0


def _refresh_catalog(defs, instance, settings: Settings) -> None:
    """Materialise the catalog asset when the file's version is not the one last materialised."""
    import dagster as dg

    from matching_pipeline.jobs.runner import materialize_catalog

    resource = defs.resources["catalog_source"]
    version = resource.version()
    event = instance.get_latest_materialization_event(dg.AssetKey("catalog"))
    current = None
    if event and event.asset_materialization:
        value = event.asset_materialization.metadata.get("catalog_version")
        current = getattr(value, "value", None)
    if current != version:
        print(f"catalog {settings.catalog_path.name}: building index for version {version}", flush=True)
        materialize_catalog(defs, instance)


def _stage_note(instance, run_ids: Sequence[str]) -> str | None:
    """The human note a stage left on its chunks (for example, why it skipped), if any.

    A stage writes the same note on every chunk it skipped, so each run's first event tells.
    """
    import dagster as dg

    for run_id in run_ids:
        records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION, limit=1).records
        materialization = records[0].event_log_entry.asset_materialization if records else None
        if materialization and "note" in materialization.metadata:
            return str(materialization.metadata["note"].value)
    return None


def cmd_summary(args: argparse.Namespace) -> int:
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.reports import format_summary

    db = open_results_database(_settings(args).database_url)
    summary = db.project_summary(args.project)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.reports import export_results

    frame = export_results(open_results_database(_settings(args).database_url), args.project, Path(args.out))
    print(f"wrote {len(frame)} rows to {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from matching_pipeline.core.readers import CATALOG, read_table
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.evaluation import evaluate_project, format_report

    settings = _settings(args)
    target = settings.target_precision if args.target_precision is None else args.target_precision
    if not 0.0 < target <= 1.0:
        print(f"--target-precision must be in (0, 1], got {target}", file=sys.stderr)
        return 2
    catalog_ids = None
    try:  # the catalog's ids let the labels' unknown catalog ids be named; without it they are not checked
        catalog = read_table(
            settings.catalog_path, CATALOG, columns=settings.catalog_columns, encoding=settings.catalog_encoding,
            limits=settings.field_limits,
        )
        catalog_ids = set(catalog["catalog_id"])
    except InputError as exc:
        print(f"catalog ids of the labels not checked: {exc}", file=sys.stderr)
    out = Path(args.out) if args.out else settings.evaluation_dir / args.project
    db = open_results_database(settings.database_url)
    try:
        outcome = evaluate_project(
            db, args.project, Path(args.labels), out, catalog_ids=catalog_ids, target_precision=target
        )
    except ValueError as exc:  # InputError included: a bad labels file names its rows
        print(str(exc), file=sys.stderr)
        return 2
    print(format_report(outcome.report))
    print(f"\nwrote {outcome.report_path} and {outcome.chart_path}")
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from matching_pipeline.definitions import build_resources
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.review_queue import export_review, import_review

    settings = _settings(args)
    db = open_results_database(settings.database_url)
    if args.review_command == "export":
        if args.candidates < 1:
            print(f"--candidates must be at least 1, got {args.candidates}", file=sys.stderr)
            return 2
        if not db.list_batches(args.project):
            print(f"project {args.project!r} has no items", file=sys.stderr)
            return 2
        frame = export_review(db, args.project, Path(args.out), candidates=args.candidates)
        print(f"wrote {len(frame)} open review items of project {args.project} to {args.out}")
        print("fill the 'decision' column: a catalog id, 'this' (the proposed catalog_id is right) or 'none'; "
              f"then run: matching-pipeline review import {args.out}")
        return 0
    catalog = build_resources(settings)["catalog_source"]
    try:
        outcome = import_review(db, Path(args.file), catalog.catalog_ids, project=args.project)
    except (InputError, FileNotFoundError) as exc:  # the review file or the catalog it is checked against
        print(f"{exc}\nnothing was applied", file=sys.stderr)
        return 2
    print(
        f"project {outcome.project}: applied {outcome.applied} decisions ({outcome.matched} matched, "
        f"{outcome.none} none of these); skipped {outcome.skipped} rows without a decision"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from matching_pipeline.sample.generator import write_sample

    paths = write_sample(Path(args.dir), n_catalog=args.catalog_size, n_items=args.items, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from matching_pipeline.jobs.status import cli_status

    return cli_status(args, _instance(_settings(args)))


def cmd_control(args: argparse.Namespace) -> int:
    from matching_pipeline.jobs.control import cli_control

    settings = _settings(args)
    return cli_control(args, _instance(settings), settings)


def cmd_api(args: argparse.Namespace) -> int:
    from matching_pipeline.api import serve

    _instance(_settings(args))
    serve(args.host, args.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="matching-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    match = sub.add_parser("match", help="ingest an item file as a batch and match it through every stage")
    match.add_argument("--project", required=True)
    match.add_argument("--items", required=True, help="CSV, Parquet or JSON Lines file of items")
    match.add_argument("--catalog", help="catalog file (default: MATCHING_CATALOG_PATH or the bundled sample)")
    match.add_argument("--catalog-encoding", help="e.g. latin-1 (default: MATCHING_CATALOG_ENCODING or utf-8)")
    match.add_argument("--catalog-columns", help="map catalog columns, e.g. catalog_id=id,description=name")
    match.add_argument("--encoding", help="encoding of the item file (default: MATCHING_ITEMS_ENCODING or utf-8)")
    match.add_argument("--columns", help="map item columns, e.g. item_id=SKU,description=Name")
    match.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    match.add_argument("--out", help="write one row per item to this CSV file")
    match.add_argument("--force", action="store_true", help="re-run chunks a stage already finished")
    match.set_defaults(func=cmd_match)

    summary = sub.add_parser("summary", help="totals and match rate by stage and method for a project")
    summary.add_argument("--project", required=True)
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=cmd_summary)

    export = sub.add_parser("export", help="write a project's results (one row per item) to CSV")
    export.add_argument("--project", required=True)
    export.add_argument("--out", required=True)
    export.set_defaults(func=cmd_export)

    evaluate = sub.add_parser("evaluate", help="precision, coverage and recall of a project on your labels, and thresholds to reach a target precision")
    evaluate.add_argument("--project", required=True)
    evaluate.add_argument("--labels", required=True, help="CSV of item_id,catalog_id[,label]; label is match (default) or non-match; catalog_id empty or none: no entry in the catalog")
    evaluate.add_argument("--target-precision", type=float, help="precision the suggested thresholds must reach (default: MATCHING_TARGET_PRECISION or 0.99)")
    evaluate.add_argument("--catalog", help="catalog whose ids the labels may name (default: MATCHING_CATALOG_PATH or the bundled sample)")
    evaluate.add_argument("--out", help="directory for evaluation.json and the chart (default: <data dir>/evaluation/<project>)")
    evaluate.set_defaults(func=cmd_evaluate)

    review = sub.add_parser("review", help="the review queue: export doubtful decisions, import a person's decisions")
    review_sub = review.add_subparsers(dest="review_command", required=True)
    review_export = review_sub.add_parser("export", help="write a project's open review items to CSV")
    review_export.add_argument("--project", required=True)
    review_export.add_argument("--out", required=True)
    review_export.add_argument("--candidates", type=int, default=10, help="candidates per row (default 10)")
    review_export.set_defaults(func=cmd_review)
    review_import = review_sub.add_parser("import", help="apply the decisions of a filled-in review file (all or nothing)")
    review_import.add_argument("file")
    review_import.add_argument("--project", help="the project, when the file has no 'project' column")
    review_import.add_argument("--catalog", help="catalog whose ids decisions may name (default: MATCHING_CATALOG_PATH or the bundled sample)")
    review_import.add_argument("--catalog-columns", help="map catalog columns, e.g. catalog_id=id,description=name")
    review_import.set_defaults(func=cmd_review)

    sample = sub.add_parser("sample", help="generate a synthetic catalog and messy item list")
    sample.add_argument("--dir", required=True)
    sample.add_argument("--catalog-size", type=int, default=5000)
    sample.add_argument("--items", type=int, default=1000)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=cmd_sample)

    status = sub.add_parser("status", help="job status from the Dagster instance (the old MatchingJob row)")
    status.add_argument("--project")
    status.add_argument("--job")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    api = sub.add_parser("api", help="serve the jobs HTTP API (set MATCHING_API_TOKEN to require a bearer token)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(func=cmd_api)

    for name, text in (
        ("cancel", "cancel a job: queued runs canceled, running runs terminated"),
        ("pause", "pause a job: no new chunks start, chunks in flight finish"),
        ("resume", "resume a job: run only its unfinished chunks"),
        ("retry", "retry only a job's failed chunks and, within them, only failed items"),
    ):
        action = sub.add_parser(name, help=text)
        action.add_argument("job")
        action.add_argument("--json", action="store_true")
        if name == "cancel":
            action.add_argument("--failed", action="store_true", help="mark the job failed instead of canceled")
            action.add_argument("--reason")
        if name in ("resume", "retry"):
            action.add_argument("--submit", action="store_true", help="submit runs to the daemon's queue instead of running them here")
        action.set_defaults(func=cmd_control)
    return parser


class _StorageRetryNotice(logging.Filter):
    """dagster-postgres logs every retry of a lost connection as a multi-line root warning; the
    user needs one line saying what happens (and the final cause if it does not come back)."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Retrying failed database connection"):
            return True
        if not self.said:
            self.said = True
            print("matching-pipeline: lost the connection to Dagster's storage; retrying", file=sys.stderr)
        return False


def _quiet_storage_retries() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _StorageRetryNotice) for f in root.filters):
        root.addFilter(_StorageRetryNotice())


def main(argv: Sequence[str] | None = None) -> int:
    # backfill_policy and pools are marked beta in Dagster 1.13; the warning is for us, not for users.
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview)")
    args = build_parser().parse_args(argv)
    _quiet_storage_retries()
    from matching_pipeline.results.faults import connection_fault
    from matching_pipeline.jobs.pools import PoolWaitTimeout

    try:
        return args.func(args)
    except PoolWaitTimeout as exc:
        print(f"matching-pipeline: {exc}", file=sys.stderr)
        return EXIT_POOL_TIMEOUT
    except Exception as exc:
        cause = connection_fault(exc)
        if cause is None:
            raise  # a bug: its traceback is what is needed to fix it
        print(
            f"matching-pipeline: database unavailable: {cause}. Chunks already finished are kept; "
            "re-run the same command to finish the rest.",
            file=sys.stderr,
        )
        return EXIT_DATABASE_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
