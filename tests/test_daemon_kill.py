"""kill -9 of a daemon-launched run worker during the AI stage never blocks anyone else.

Before: the killed run kept the ``openai`` pool slot (limit 1) and every later AI run, of any
project, waited "blocked by global concurrency limits" until someone freed the slot by hand. Now
the run is marked failed (by the code server that launched the worker; run monitoring would catch
it otherwise) and the monitoring daemon frees its slot ``free_slots_after_run_end_seconds`` after
the run ended, so another project's AI run gets it by itself.

The instance is the shipped ``dagster.yaml`` with shorter run-monitoring times (see
``_instance_config``): the same mechanisms, without waiting out the production intervals
(30 s to free, 30 s between monitoring passes).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml

from tests.servers.openai_server import FakeOpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
FREE_SLOTS_AFTER_S = 3
"""``free_slots_after_run_end_seconds`` of this test's instance (30 in the shipped config)."""


def _run_worker(home: Path) -> psutil.Process | None:
    """The process executing a run for this instance: a child of its code server's gRPC process."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "api grpc" in cmdline and str(home) in cmdline:
            for child in proc.children():
                if "multiprocessing.spawn" in " ".join(child.cmdline()):
                    return child
    return None


def _instance_config() -> str:
    """The shipped ``dagster.yaml`` with run monitoring polling every second and freeing an ended
    run's pool slots after 3 s (30 s and 30 s shipped): everything else as shipped."""
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] and monitoring["free_slots_after_run_end_seconds"] > 0
    monitoring.update(poll_interval_seconds=1, free_slots_after_run_end_seconds=FREE_SLOTS_AFTER_S)
    return yaml.safe_dump(config)


def _drop(inbox: Path, project: str, name: str) -> None:
    folder = inbox / project
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "matching_pipeline" / "sample" / "items.csv", folder / name)
    (folder / f"{name}.done").touch()


def test_a_killed_run_worker_frees_the_pool_for_other_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(_instance_config())
    data = tmp_path / "data"
    with FakeOpenAI(latency_s=1.0) as model:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MATCHING_", "OPENAI_", "DAGSTER_"))}
        env.update(
            DAGSTER_HOME=str(home),
            MATCHING_DATA_DIR=str(data),
            OPENAI_BASE_URL=model.url,
            OPENAI_API_KEY="sk-test",
            MATCHING_AI_MODEL="test-model",
            MATCHING_AI_MAX_CONCURRENCY="1",
            MATCHING_AI_ITEMS_PER_REQUEST="item",
        )
        log = (tmp_path / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            _drop(data / "inbox", "first", "a.csv")
            deadline = time.monotonic() + 300
            while model.count < 3:  # the first project's AI run holds the slot and is asking the model
                assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the AI stage never started"
                time.sleep(0.2)
            worker = _run_worker(home)
            assert worker is not None, "no run worker found under this instance's code server"
            worker.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            # The killed run is retried (run_retries) and its retry is queued ahead of the second
            # project's run: answer fast from now on so the retry does not hold the slot for long.
            model.latency_s = 0.02
            _drop(data / "inbox", "second", "b.csv")

            monkeypatch.setenv("DAGSTER_HOME", str(home))
            with dg.DagsterInstance.get() as instance:
                while True:
                    runs = instance.get_runs(dg.RunsFilter(job_name="ai_job"))
                    second = [r for r in runs if r.tags.get("matching/project") == "second"]
                    if any(r.status == dg.DagsterRunStatus.SUCCESS for r in second):
                        break
                    assert time.monotonic() - killed < 300, f"the second project never got the pool: {[(r.tags.get('matching/project'), r.status) for r in runs]}"
                    time.sleep(0.5)
                recovered_s = time.monotonic() - killed
                first_runs = [r for r in runs if r.tags.get("matching/project") == "first"]
                failed = [r for r in first_runs if r.status == dg.DagsterRunStatus.FAILURE]
                assert len(failed) == 1  # the killed run is marked failed, not left STARTED
                # It kept its slot until free_slots_after_run_end_seconds had passed since it
                # ended: no AI run after it (its retry, the second project's) started sooner.
                records = instance.get_run_records(dg.RunsFilter(job_name="ai_job"))
                (killed_record,) = [r for r in records if r.dagster_run.run_id == failed[0].run_id]
                assert killed_record.end_time is not None
                freed_at = killed_record.end_time + FREE_SLOTS_AFTER_S
                later = [r for r in records if r.create_timestamp > killed_record.create_timestamp]
                starts = [(r.dagster_run.tags.get("matching/project"), r.start_time, freed_at) for r in later]
                assert later and all(r.start_time is not None and r.start_time >= freed_at for r in later), starts
            print(f"second project's AI run succeeded {recovered_s:.0f} s after the kill")
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            for proc in psutil.process_iter(["cmdline"]):  # the code server and any run worker of this instance
                if str(home) in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
            log.close()
