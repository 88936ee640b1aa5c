"""One job model: requests become runs through a sensor, the cascade never re-runs what a stage
already finished (the ``/process`` + daemon race), work started in the UI is a job, and status
stays true after failures and re-runs."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg

from matching_pipeline.defs import job_facts
from matching_pipeline.defs.cascade import cascade_requests, cascade_sensor
from matching_pipeline.defs.job_facts import job_id_of_run
from matching_pipeline.defs.requests import job_requests_sensor, list_requests
from matching_pipeline.defs.stages import STAGE_SPECS
from matching_pipeline.defs.tags import RANGE_END, RANGE_START, TAG_JOB, TAG_REQUEST, TAG_STAGES, WILL_RETRY
from matching_pipeline.jobs import control
from matching_pipeline.jobs.runner import execute_stage_run, new_job_id, run_stage
from matching_pipeline.jobs.status import job_status, list_jobs
from tests.helpers import break_chunk, ingest_items, restore_chunk, result_rows


def evaluate_cascade(instance: dg.DagsterInstance, defs: dg.Definitions, run_id: str):
    """The cascade sensor as the daemon evaluates it for a run that succeeded."""
    run = instance.get_run_by_id(run_id)
    event = next(iter(instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_SUCCESS))).dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name="cascade_sensor", dagster_instance=instance, dagster_run=run, dagster_event=event,
        resources={"results": defs.resources["results"]},
    )
    return cascade_sensor(context)


def why_no_cascade(instance: dg.DagsterInstance, defs: dg.Definitions, run_id: str) -> str:
    """What the cascade sensor logs for a run it answers with None (it asks for nothing)."""
    outcome = cascade_requests(instance, instance.get_run_by_id(run_id), defs.resources["results"].get())
    assert isinstance(outcome, str), outcome
    return outcome


def stage_runs(instance: dg.DagsterInstance, stage: str) -> list[dg.DagsterRun]:
    return [r for r in instance.get_runs() if r.job_name == STAGE_SPECS[stage].job_name]


def test_process_and_the_daemon_never_run_a_stage_twice(job_settings, job_defs, instance, generated_sample) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 30)
    job = control.create_job(instance, batch, "all")  # the API's create: a request, no run yet
    (request,) = list_requests(instance, job)
    assert request.state == "pending" and job_status(instance, job)["status"] == "pending"

    # The requests sensor turns it into a run request keyed by the request id.
    emitted = job_requests_sensor(dg.build_sensor_context(instance=instance))
    (run_request,) = emitted.run_requests
    assert run_request.run_key == request.id and run_request.job_name == "enhanced_job"
    assert run_request.tags[TAG_STAGES] == "enhanced,ai,web_search"

    # The daemon launches it (executed here with the tags the daemon's run gets) ...
    daemon_run = execute_stage_run(job_defs, instance, "enhanced", {**run_request.tags, TAG_REQUEST: request.id}, say=lambda _: None)
    assert daemon_run.success
    # ... while the API's /process runs the next stages in process before the cascade's tick.
    _, first = control.process_next(instance, job, job_defs)
    _, second = control.process_next(instance, job, job_defs)
    assert first.startswith("ai:") and second.startswith("web_search:"), (first, second)
    assert job_status(instance, job)["status"] == "completed"

    # The daemon's cascade tick for the enhanced run now asks for nothing, and the request is done.
    assert evaluate_cascade(instance, job_defs, daemon_run.run_id) is None
    assert "done or in progress" in why_no_cascade(instance, job_defs, daemon_run.run_id)
    assert isinstance(job_requests_sensor(dg.build_sensor_context(instance=instance)), dg.SkipReason)
    assert list_requests(instance, job) == []  # its run is the record now
    assert len(stage_runs(instance, "ai")) == 1 and len(stage_runs(instance, "web_search")) == 1
    rows = result_rows(job_settings)
    assert not rows.duplicated(["item_id", "stage"]).any() and len(rows.query("stage == 'enhanced'")) == 30
    view = job_status(instance, job)
    assert view["status"] == "completed" and view["processedItems"] == 30 and view["estimatedCompletion"] is None


def test_a_job_is_never_missing_while_the_daemon_launches_its_request(job_settings, job_defs, instance, generated_sample, monkeypatch) -> None:
    """The daemon launches a request's run and forgets the request at any moment, also between the
    status view's reads of the job's runs and of its requests: the job is found all the same."""
    batch = ingest_items(job_settings, instance, generated_sample, 10)
    job = control.create_job(instance, batch, "enhanced")
    (request,) = list_requests(instance, job)
    read_runs = job_facts.job_runs

    def runs_then_the_daemon_acts(inst: dg.DagsterInstance, job_id: str) -> list[dg.RunRecord]:
        runs = read_runs(inst, job_id)
        if list_requests(inst, job_id):  # the daemon launches the request's run, then forgets the request
            (run_request,) = job_requests_sensor(dg.build_sensor_context(instance=inst)).run_requests
            execute_stage_run(job_defs, inst, "enhanced", {**run_request.tags, TAG_REQUEST: request.id}, say=lambda _: None)
            assert isinstance(job_requests_sensor(dg.build_sensor_context(instance=inst)), dg.SkipReason)
        return runs

    monkeypatch.setattr(job_facts, "job_runs", runs_then_the_daemon_acts)
    view = job_status(instance, job)
    assert view is not None and view["id"] == job  # was None: neither the run nor the request read
    assert list_requests(instance, job) == []  # the daemon did act mid-read
    monkeypatch.setattr(job_facts, "job_runs", read_runs)
    assert job_status(instance, job)["status"] == "completed"


def test_a_chunk_rematerialised_in_the_ui_is_a_job_and_carries_on(job_settings, job_defs, instance, generated_sample) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 30)
    for stage in ("enhanced", "ai", "web_search"):
        assert run_stage(job_defs, instance, stage, batch.chunk_keys, job_id="j-first", stages=["enhanced", "ai", "web_search"], say=lambda _: None)[0].success

    # Re-materialise chunk 2 of enhanced_matches as the UI does: a partition tag, no job tags.
    chunk = batch.chunk_keys[1]
    ui_run = execute_stage_run(job_defs, instance, "enhanced", {"dagster/partition": chunk}, say=lambda _: None)
    assert ui_run.success and job_id_of_run(instance.get_run_by_id(ui_run.run_id)) == ui_run.run_id
    (request,) = evaluate_cascade(instance, job_defs, ui_run.run_id)
    assert request.job_name == "ai_job" and (request.tags[RANGE_START], request.tags[RANGE_END]) == (chunk, chunk)
    assert request.tags[TAG_JOB] == ui_run.run_id and request.tags[TAG_STAGES] == "enhanced,ai,web_search"
    # The same upstream decisions asked for twice: one run key.
    (again,) = evaluate_cascade(instance, job_defs, ui_run.run_id)
    assert again.run_key == request.run_key

    view = job_status(instance, ui_run.run_id)
    assert view["totalChunks"] == 1 and view["jobType"] == "all" and view["projectId"] == "acme"
    assert [s["doneChunks"] for s in view["stages"]] == [1, 0, 0] and view["status"] == "processing"
    assert ui_run.run_id in {v["id"] for v in list_jobs(instance, "acme")}

    # An AI run over that chunk, executed as the cascade asked, continues the same job.
    ai = execute_stage_run(job_defs, instance, "ai", dict(request.tags), say=lambda _: None)
    assert ai.success and job_status(instance, ui_run.run_id)["stages"][1]["doneChunks"] == 1
    (web,) = evaluate_cascade(instance, job_defs, ai.run_id)
    assert web.job_name == "web_search_job" and web.tags[TAG_JOB] == ui_run.run_id

    # A request for that stage pending over the chunk: nothing more is asked for.
    control.Submitter(instance).submit("web_search", dict(web.tags))
    assert evaluate_cascade(instance, job_defs, ai.run_id) is None


def test_no_cascade_into_a_stage_the_same_backfill_runs(job_settings, job_defs, instance, generated_sample, monkeypatch) -> None:
    batch = ingest_items(job_settings, instance, generated_sample, 20)
    run = execute_stage_run(
        job_defs, instance, "enhanced",
        {RANGE_START: batch.chunk_keys[0], RANGE_END: batch.chunk_keys[-1], "dagster/backfill": "bf1"}, say=lambda _: None,
    )
    selection = [dg.AssetKey("enhanced_matches")]
    backfill = SimpleNamespace(asset_selection=selection, status=SimpleNamespace(value="REQUESTED"), asset_backfill_data=None, backfill_timestamp=0.0)
    monkeypatch.setattr(type(instance), "get_backfill", lambda self, backfill_id: backfill if backfill_id == "bf1" else None)

    (request,) = evaluate_cascade(instance, job_defs, run.run_id)  # only enhanced selected: the cascade goes on
    assert request.tags[TAG_JOB] == "bf1"
    selection.append(dg.AssetKey("ai_matches"))
    assert evaluate_cascade(instance, job_defs, run.run_id) is None
    assert "backfill" in why_no_cascade(instance, job_defs, run.run_id)

    view = job_status(instance, "bf1")
    assert view["backfill"] and view["status"] == "processing" and view["stages"][0]["doneChunks"] == 2


def test_status_is_true_after_a_failure_and_a_rerun_under_another_id(job_settings, job_defs, generated_sample) -> None:
    overrides = {"run_retries": {"enabled": True, "max_retries": 2}}
    with dg.instance_for_test(overrides=overrides) as instance:
        batch = ingest_items(job_settings, instance, generated_sample, 40)
        saved = break_chunk(job_settings, batch.chunk_keys[2])
        (failed,) = run_stage(job_defs, instance, "enhanced", batch.chunk_keys, job_id=new_job_id(batch, instance=instance), stages=["enhanced"], say=lambda _: None)
        assert not failed.success
        run = instance.get_run_by_id(failed.run_id)
        assert run.tags.get(WILL_RETRY) != "true"  # executed in process: no daemon retries it
        first_job = run.tags[TAG_JOB]
        view = job_status(instance, first_job)
        assert view["status"] == "failed" and "has no items" in view["error"] and view["estimatedCompletion"] is None

        # The same command again continues the same job ...
        assert new_job_id(batch, instance=instance) == first_job
        # ... and a re-run under another id that finishes the chunks finishes this job too.
        restore_chunk(job_settings, saved)
        assert run_stage(job_defs, instance, "enhanced", batch.chunk_keys[2:], job_id="someone-else", stages=["enhanced"], say=lambda _: None)[0].success
        done = job_status(instance, first_job)
        assert done["status"] == "completed" and done["processedItems"] == 40 and done["error"] is None
