"""The ``matching-pipeline`` command line."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from matching_pipeline.cli_display import MatchDisplay, print_summary
from matching_pipeline.core.models import STAGES
from matching_pipeline.core.readers import InputError
from matching_pipeline.settings import Settings, parse_column_map

if TYPE_CHECKING:
    from matching_pipeline.results.store import Batch

EXIT_OK = 0
EXIT_FAILED = 1
"""A run failed (its progress line says why), or an unexpected error (with its traceback)."""
EXIT_BAD_INPUT = 2
"""A file, column, option or project that cannot be used; argparse's usage errors are 2 as well."""
EXIT_DATABASE_UNAVAILABLE = 3
"""Exit status when the results database or Dagster's storage could not be reached (see README)."""
EXIT_POOL_TIMEOUT = 4
"""Exit status when a pool stayed busy for MATCHING_POOL_WAIT_TIMEOUT_SECONDS."""


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if getattr(args, "catalog", None):
        overrides["catalog_path"] = args.catalog  # a path (made absolute by Settings) or a URL
    if getattr(args, "catalog_encoding", None):
        overrides["catalog_encoding"] = args.catalog_encoding
    if getattr(args, "catalog_columns", None):
        overrides["catalog_columns"] = parse_column_map(args.catalog_columns)
    if getattr(args, "encoding", None):
        overrides["items_encoding"] = args.encoding
    if getattr(args, "columns", None):
        overrides["item_columns"] = parse_column_map(args.columns)
    return settings.replace(**overrides)


def _instance(settings: Settings):
    import dagster as dg

    if not os.environ.get("DAGSTER_HOME"):
        home = settings.data_dir / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        os.environ["DAGSTER_HOME"] = str(home)
        print(f"DAGSTER_HOME is not set; using {home}", file=sys.stderr)
    return dg.DagsterInstance.get()


def cmd_match(args: argparse.Namespace) -> int:
    from matching_pipeline.clients.object_store import object_stamp
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.jobs.pools import reap_dead_runs
    from matching_pipeline.jobs.runner import console_log_config, ensure_partitions, new_job_id, run_stage
    from matching_pipeline.results.ingest import ingest_file
    from matching_pipeline.results.reports import export_results

    settings = _settings(args)
    requested = args.stages.split(",") if args.stages else list(STAGES)
    unknown = [s for s in requested if s not in STAGES]
    if unknown:
        print(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    stages = [s for s in STAGES if s in requested]
    items_path = Path(args.items)
    try:  # before the items are stored: a catalog nobody can read would only fail the first stage
        object_stamp(settings.catalog_path, settings.s3_endpoint_url)
    except OSError as exc:  # names the path or URL (never its credentials)
        print(f"catalog file not found or unreadable: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    db = open_results_database(settings.database_url)
    try:
        batch = ingest_file(
            db, items_path, args.project, read=settings.item_read_options
        )
    except InputError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
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
    run_config = console_log_config("DEBUG" if args.verbose else "CRITICAL")
    try:
        _refresh_catalog(defs, instance, settings, run_config)
    except (InputError, OSError, RuntimeError) as exc:  # a bad catalog file is the user's to fix: say which and why
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT

    job_id = new_job_id(batch, instance=instance)  # the same file again continues the same job
    failed = False
    notes: dict[str, str] = {}
    sizes = _chunk_sizes(batch)
    with MatchDisplay() as display:
        for stage in stages:
            keys = batch.chunk_keys
            if not args.force:
                done = db.finished_chunks(stage, keys)
                keys = [k for k in keys if k not in done]
            if not keys:
                display.say(f"[{stage}] all {batch.chunk_count} chunks already done")
                continue
            with display.stage(stage, keys, sizes, poll=functools.partial(db.finished_chunks, stage, keys)) as tracker:
                outcomes = run_stage(
                    defs, instance, stage, keys, job_id=job_id, stages=stages, on_run=tracker.run_finished,
                    say=display.say, run_config=run_config,  # the runner prefixes [stage]
                )
            note = _stage_note(instance, [o.run_id for o in outcomes])
            if note:
                notes[stage] = note
                display.say(f"[{stage}] {note}")
            if not all(o.success for o in outcomes):
                failed = True
                print(f"[{stage}] stopped; re-run the same command to finish only what is left", file=sys.stderr)
                break

    summary = db.project_summary(batch.project)
    where = []
    if args.out:
        frame = export_results(db, batch.project, Path(args.out), batch_id=batch.id)
        where.append(f"results: wrote {len(frame)} rows to {args.out}")
    else:
        where.append(f"results: in the results database; write them with: matching-pipeline export --project {batch.project} --out FILE")
    where.append(f"job {job_id}: runs are in the Dagster instance at {os.environ['DAGSTER_HOME']}")
    print_summary(summary, notes=notes, where=where)
    return EXIT_FAILED if failed else EXIT_OK


def _chunk_sizes(batch: Batch) -> dict[str, int]:
    """Items per chunk: chunks are cut CHUNK_SIZE items at a time in arrival order, so only the
    last one can be short (and chunks are never re-cut)."""
    from matching_pipeline.results.store import CHUNK_SIZE

    keys = batch.chunk_keys
    sizes = dict.fromkeys(keys, CHUNK_SIZE)
    if keys:
        sizes[keys[-1]] = batch.item_count - CHUNK_SIZE * (len(keys) - 1)
    return sizes


def _refresh_catalog(defs, instance, settings: Settings, run_config: dict[str, object]) -> None:
    """Materialise the catalog asset when the file's version is not the one last materialised."""
    import dagster as dg

    from matching_pipeline.clients.object_store import object_name
    from matching_pipeline.jobs.runner import materialize_catalog

    resource = defs.resources["catalog_source"]
    version = resource.version()
    event = instance.get_latest_materialization_event(dg.AssetKey("catalog"))
    current = None
    if event and event.asset_materialization:
        value = event.asset_materialization.metadata.get("catalog_version")
        current = getattr(value, "value", None)
    if current != version:
        print(f"catalog {object_name(settings.catalog_path)}: building index for version {version}", flush=True)
        materialize_catalog(defs, instance, run_config)


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

    db = open_results_database(_settings(args).database_url)
    summary = db.project_summary(args.project)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from matching_pipeline.defs.resources import open_results_database
    from matching_pipeline.results.reports import export_results

    frame = export_results(open_results_database(_settings(args).database_url), args.project, Path(args.out))
    print(f"wrote {len(frame)} rows to {args.out}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from matching_pipeline.definitions import build_resources
    from matching_pipeline.defs.resources import CatalogResource, open_results_database
    from matching_pipeline.results.evaluation import evaluate_project, format_report

    settings = _settings(args)
    target = settings.target_precision if args.target_precision is None else args.target_precision
    if not 0.0 < target <= 1.0:
        print(f"--target-precision must be in (0, 1], got {target}", file=sys.stderr)
        return EXIT_BAD_INPUT
    catalog_ids = None
    try:  # the catalog's ids let the labels' unknown catalog ids be named; without it they are not checked
        catalog = build_resources(settings)["catalog_source"]  # a path or a URL, read as the stages read it
        assert isinstance(catalog, CatalogResource)
        catalog_ids = set(catalog.catalog_ids())
    except (InputError, OSError) as exc:
        print(f"catalog ids of the labels not checked: {exc}", file=sys.stderr)
    out = Path(args.out) if args.out else settings.evaluation_dir / args.project
    db = open_results_database(settings.database_url)
    try:
        outcome = evaluate_project(
            db, args.project, Path(args.labels), out, catalog_ids=catalog_ids, target_precision=target
        )
    except ValueError as exc:  # InputError included: a bad labels file names its rows
        print(str(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_report(outcome.report))
    print(f"\nwrote {outcome.report_path} and {outcome.chart_path}")
    return EXIT_OK


def cmd_review(args: argparse.Namespace) -> int:
    from matching_pipeline.definitions import build_resources
    from matching_pipeline.defs.resources import CatalogResource, open_results_database
    from matching_pipeline.results.review_queue import export_review, import_review

    settings = _settings(args)
    db = open_results_database(settings.database_url)
    if args.review_command == "export":
        if args.candidates < 1:
            print(f"--candidates must be at least 1, got {args.candidates}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if not db.list_batches(args.project):
            print(f"project {args.project!r} has no items", file=sys.stderr)
            return EXIT_BAD_INPUT
        frame = export_review(db, args.project, Path(args.out), candidates=args.candidates)
        print(f"wrote {len(frame)} open review items of project {args.project} to {args.out}")
        print("fill the 'decision' column: a catalog id, 'this' (the proposed catalog_id is right) or 'none'; "
              f"then run: matching-pipeline review import {args.out}")
        return EXIT_OK
    catalog = build_resources(settings)["catalog_source"]
    assert isinstance(catalog, CatalogResource)
    try:
        outcome = import_review(db, Path(args.file), catalog.catalog_ids, project=args.project)
    except (InputError, OSError) as exc:  # the review file or the catalog it is checked against
        print(f"{exc}\nnothing was applied", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"project {outcome.project}: applied {outcome.applied} decisions ({outcome.matched} matched, "
        f"{outcome.none} none of these); skipped {outcome.skipped} rows without a decision"
    )
    return EXIT_OK


def cmd_sample(args: argparse.Namespace) -> int:
    from matching_pipeline.sample.generator import write_sample

    paths = write_sample(Path(args.dir), n_catalog=args.catalog_size, n_items=args.items, seed=args.seed)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from matching_pipeline.jobs.status import cli_status

    return cli_status(args, _instance(_settings(args)))


def cmd_control(args: argparse.Namespace) -> int:
    from matching_pipeline.definitions import build_definitions
    from matching_pipeline.jobs.control import cli_control

    settings = _settings(args)
    return cli_control(args, _instance(settings), lambda: build_definitions(settings))


def cmd_api(args: argparse.Namespace) -> int:
    from matching_pipeline.api import serve

    _instance(_settings(args))
    serve(args.host, args.port)
    return EXIT_OK


EXIT_CODES = f"""exit status:
  {EXIT_OK}  done
  {EXIT_FAILED}  a run failed (its line says why; re-run the same command to finish the rest), or another error
  {EXIT_BAD_INPUT}  bad input: a file, column, option or project that cannot be used (the message names it)
  {EXIT_DATABASE_UNAVAILABLE}  the results database or Dagster's storage could not be reached (finished chunks are kept)
  {EXIT_POOL_TIMEOUT}  a pool (openai, web_search) stayed busy for MATCHING_POOL_WAIT_TIMEOUT_SECONDS"""

JOB_EXAMPLE = "b000001-cli-1a2b3c"


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option says its default (or that it is required); epilogs keep their example lines.

    Defaults that come from the environment are written into the help text itself (argparse only
    knows ``None`` there), so an option whose help already names a default is left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.required:
            return f"{text} (required)"
        if action.nargs == 0 and action.const is True:  # a store_true flag
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines) + "\n\n" + EXIT_CODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matching-pipeline",
        description="Match item lists against a product catalog through Dagster (enhanced, ai, web_search stages).",
        formatter_class=_HelpFormatter,
        epilog=_examples(
            "matching-pipeline match --project demo --items items.csv --out results.csv",
            "matching-pipeline status --project demo",
            "matching-pipeline match --help        (every command has its own help and examples)",
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose", "-v", action="store_true",
        help="show Dagster's log lines (every run event) on stderr, e.g. to follow a run step by step",
    )

    def command(where: argparse._SubParsersAction, name: str, text: str, *examples: str) -> argparse.ArgumentParser:
        return where.add_parser(
            name, help=text, description=text, parents=[common], formatter_class=_HelpFormatter, epilog=_examples(*examples)
        )

    def add_project(command_parser: argparse.ArgumentParser) -> None:
        command_parser.add_argument("--project", required=True, metavar="NAME", help="project the items belong to, e.g. acme")

    catalog = (
        "catalog file or URL, e.g. catalog.csv or s3://bucket/catalog.csv "
        "(default: MATCHING_CATALOG_PATH, else the bundled sample catalog)"
    )
    catalog_columns = (
        "map catalog column names, e.g. catalog_id=id,description=name "
        "(default: MATCHING_CATALOG_COLUMNS, else the standard names)"
    )

    match = command(
        sub, "match", "ingest an item file as a batch and match it through every stage, with progress per stage",
        "matching-pipeline match --project demo --items items.csv --out results.csv",
        "matching-pipeline match --project acme --items shop.csv --columns item_id=SKU,description=Name --stages enhanced",
        "matching-pipeline match --project acme --items shop.parquet --catalog catalog.csv --catalog-encoding latin-1 --verbose",
    )
    add_project(match)
    match.add_argument("--items", required=True, metavar="FILE", help="CSV, Parquet or JSON Lines file of items, e.g. items.csv")
    match.add_argument("--catalog", metavar="FILE", help=catalog)
    match.add_argument(
        "--catalog-encoding", metavar="ENCODING",
        help="text encoding of a CSV catalog, e.g. latin-1 (default: MATCHING_CATALOG_ENCODING, else utf-8)",
    )
    match.add_argument("--catalog-columns", metavar="MAP", help=catalog_columns)
    match.add_argument(
        "--encoding", metavar="ENCODING", help="text encoding of a CSV item file, e.g. cp1252 (default: MATCHING_ITEMS_ENCODING, else utf-8)"
    )
    match.add_argument(
        "--columns", metavar="MAP",
        help="map item column names, e.g. item_id=SKU,description=Name (default: MATCHING_ITEM_COLUMNS, else the standard names)",
    )
    match.add_argument("--stages", default=",".join(STAGES), metavar="LIST", help="comma-separated stages to run, in order, e.g. enhanced,ai")
    match.add_argument(
        "--out", metavar="FILE", help="also write one row per item to this CSV file, e.g. results.csv (default: none; `export` writes it later)"
    )
    match.add_argument("--force", action="store_true", help="re-run chunks a stage already finished, e.g. after changing thresholds")
    match.set_defaults(func=cmd_match)

    summary = command(
        sub, "summary", "totals and match rate by stage and method for a project",
        "matching-pipeline summary --project demo", "matching-pipeline summary --project demo --json | jq .match_rate",
    )
    add_project(summary)
    summary.add_argument("--json", action="store_true", help="print JSON instead of a table, e.g. for scripts")
    summary.set_defaults(func=cmd_summary)

    export = command(
        sub, "export", "write a project's results (one row per item) to CSV",
        "matching-pipeline export --project demo --out results.csv",
    )
    add_project(export)
    export.add_argument("--out", required=True, metavar="FILE", help="CSV file to write, e.g. results.csv")
    export.set_defaults(func=cmd_export)

    evaluate = command(
        sub, "evaluate",
        "precision, coverage and recall of a project on your labels, and thresholds to reach a target precision",
        "matching-pipeline evaluate --project demo --labels matching_pipeline/sample/truth.csv",
        "matching-pipeline evaluate --project acme --labels labels.csv --target-precision 0.995 --out eval/acme",
    )
    add_project(evaluate)
    evaluate.add_argument(
        "--labels", required=True, metavar="FILE",
        help="CSV of item_id,catalog_id[,label], e.g. labels.csv; label is match or non-match (default match); "
        "an empty or 'none' catalog_id: no entry in the catalog",
    )
    evaluate.add_argument(
        "--target-precision", type=float, metavar="P",
        help="precision the suggested thresholds must reach, e.g. 0.995 (default: MATCHING_TARGET_PRECISION, else 0.99)",
    )
    evaluate.add_argument("--catalog", metavar="FILE", help="catalog (file or URL) whose ids the labels may name, e.g. catalog.csv "
                          "(default: MATCHING_CATALOG_PATH, else the bundled sample catalog)")
    evaluate.add_argument(
        "--out", metavar="DIR", help="directory for evaluation.json and the chart, e.g. eval/acme (default: <data dir>/evaluation/<project>)"
    )
    evaluate.set_defaults(func=cmd_evaluate)

    review = sub.add_parser(
        "review", help="the review queue: export doubtful decisions, import a person's decisions",
        formatter_class=_HelpFormatter,
        epilog=_examples(
            "matching-pipeline review export --project demo --out review.csv",
            "matching-pipeline review import review.csv",
        ),
    )
    review_sub = review.add_subparsers(dest="review_command", required=True, metavar="ACTION")
    review_export = command(
        review_sub, "export", "write a project's open review items to CSV, for a person to decide",
        "matching-pipeline review export --project demo --out review.csv",
        "matching-pipeline review export --project demo --out review.csv --candidates 3",
    )
    add_project(review_export)
    review_export.add_argument("--out", required=True, metavar="FILE", help="CSV file to write, e.g. review.csv")
    review_export.add_argument("--candidates", type=int, default=10, metavar="N", help="catalog candidates per row, e.g. 3")
    review_export.set_defaults(func=cmd_review)
    review_import = command(
        review_sub, "import", "apply the decisions of a filled-in review file (all or nothing)",
        "matching-pipeline review import review.csv",
        "matching-pipeline review import decided.csv --project demo --catalog catalog.csv",
    )
    review_import.add_argument("file", metavar="FILE", help="the filled-in review file, e.g. review.csv")
    review_import.add_argument(
        "--project", metavar="NAME", help="the project, e.g. acme (default: the file's 'project' column)"
    )
    review_import.add_argument("--catalog", metavar="FILE", help=catalog)
    review_import.add_argument("--catalog-columns", metavar="MAP", help=catalog_columns)
    review_import.set_defaults(func=cmd_review)

    sample = command(
        sub, "sample", "generate a synthetic catalog and messy item list (with the true matches)",
        "matching-pipeline sample --dir data/sample",
        "matching-pipeline sample --dir data/big --catalog-size 50000 --items 20000 --seed 7",
    )
    sample.add_argument("--dir", required=True, metavar="DIR", help="directory to write catalog.csv, items.csv and truth.csv to, e.g. data/sample")
    sample.add_argument("--catalog-size", type=int, default=5000, metavar="N", help="catalog entries, e.g. 50000")
    sample.add_argument("--items", type=int, default=1000, metavar="N", help="items to match, e.g. 20000")
    sample.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (same seed, same files), e.g. 7")
    sample.set_defaults(func=cmd_sample)

    status = command(
        sub, "status", "job status from the Dagster instance (the old MatchingJob row)",
        "matching-pipeline status", "matching-pipeline status --project demo",
        f"matching-pipeline status --job {JOB_EXAMPLE} --json",
    )
    status.add_argument("--project", metavar="NAME", help="only this project's jobs, e.g. acme (default: every project)")
    status.add_argument("--job", metavar="JOB", help=f"only this job, e.g. {JOB_EXAMPLE} (default: every job)")
    status.add_argument("--json", action="store_true", help="print JSON (the HTTP API's shape), e.g. for scripts")
    status.set_defaults(func=cmd_status)

    api = command(
        sub, "api", "serve the jobs HTTP API (set MATCHING_API_TOKEN to require a bearer token)",
        "matching-pipeline api", "MATCHING_API_TOKEN=secret matching-pipeline api --host 0.0.0.0 --port 8080",
    )
    api.add_argument("--host", default="127.0.0.1", help="address to listen on, e.g. 0.0.0.0 for every interface")
    api.add_argument("--port", type=int, default=8000, help="port to listen on, e.g. 8080")
    api.set_defaults(func=cmd_api)

    for name, text in (
        ("cancel", "cancel a job: queued runs canceled, running runs terminated"),
        ("pause", "pause a job: no new chunks start, chunks in flight finish"),
        ("resume", "resume a job: run only its unfinished chunks"),
        ("retry", "retry only a job's failed chunks and, within them, only failed items"),
    ):
        examples = [f"matching-pipeline {name} {JOB_EXAMPLE}"]
        if name == "cancel":
            examples.append(f"matching-pipeline cancel {JOB_EXAMPLE} --failed --reason 'wrong catalog'")
        if name in ("resume", "retry"):
            examples.append(f"matching-pipeline {name} {JOB_EXAMPLE} --submit")
        action = command(sub, name, text, *examples)
        action.add_argument("job", metavar="JOB", help=f"the job id `status` shows, e.g. {JOB_EXAMPLE}")
        action.add_argument("--json", action="store_true", help="print the job's view as JSON, e.g. for scripts")
        if name == "cancel":
            action.add_argument("--failed", action="store_true", help="mark the job failed instead of canceled, e.g. when its input was wrong")
            action.add_argument("--reason", help="why, shown in the job's status, e.g. 'wrong catalog' (default: none)")
        if name in ("resume", "retry"):
            action.add_argument(
                "--submit", action="store_true",
                help="submit runs to the daemon's queue instead of running them here, e.g. when `make dev` runs",
            )
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


@contextmanager
def _dagster_python_logs(verbose: bool) -> Iterator[None]:
    """Dagster's own Python loggers (``dagster`` and below: instance, storage, code loading) at
    WARNING unless ``--verbose``; run events are governed by the run config (``console_log_config``).
    Restored afterwards, because ``main`` also runs inside tests and other programs."""
    logger = logging.getLogger("dagster")
    before = logger.level
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


def main(argv: Sequence[str] | None = None) -> int:
    # backfill_policy and pools are marked beta in Dagster 1.13; the warning is for us, not for users.
    warnings.filterwarnings("ignore", message=r".*(is currently in beta|is currently in preview)")
    args = build_parser().parse_args(argv)
    _quiet_storage_retries()
    from matching_pipeline.jobs.pools import PoolWaitTimeout
    from matching_pipeline.results.faults import connection_fault

    try:
        with _dagster_python_logs(args.verbose):
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
