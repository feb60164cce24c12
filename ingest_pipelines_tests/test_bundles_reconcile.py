"""Bundle jobs converge by themselves, tested as users run the processes: `ingest-pipelines serve` with its
documented defaults (run from the project folder, no --workspace) beside a real `dagster-daemon run -w
workspace.yaml` on a DAGSTER_HOME with the project's dagster.yaml, bundles POSTed over HTTP. A killed run worker is
retried, a run nobody dequeues ends FAILED with the reason, maxAttempts ends in FAILED with the last reason, a
rejected bundle is not retried, and serve says whether the daemon loads the code location it submits to."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
import yaml

from ingest_pipelines.bundles.attempts import RunView
from ingest_pipelines.bundles.jobs import JobStore
from ingest_pipelines.config import load_config
from ingest_pipelines.defs.bundles.reconcile import InstanceRuns
from ingest_pipelines.testing import free_port
from ingest_pipelines.testing.http_server import Response
from ingest_pipelines_tests.bundle_fixtures import (
    ARCHIVE_BUCKET,
    ARCHIVE_PREFIX,
    DROP_BUCKET,
    SAMPLE_FILES,
    answering,
    build_tar,
    bundle_config,
    get_state,
    keys,
    project_home,
    run_worker_pid,
)
from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, wait_until

pytestmark = pytest.mark.slow

#: runs start at once, in serve's code server (no daemon needed)
DEFAULT_COORDINATOR = (
    "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n"
)
WORKFLOW = "pacifica-bundles"
SENSOR = "pacifica_bundles__drop_sensor"


class Deployment:
    """An ingest.yaml, a DAGSTER_HOME and the processes, started from the project folder as documented."""

    def __init__(self, tmp_path: Path, document: dict[str, Any], instance_yaml: str | None = None):
        self.procs = ProcessGroup(tmp_path / "logs")
        self.config = tmp_path / "ingest.yaml"
        self.config.write_text(yaml.safe_dump(document))
        self.home = project_home(tmp_path / "dagster_home", instance_yaml)
        self.env = child_env(DAGSTER_HOME=str(self.home), INGEST_CONFIG=str(self.config))
        self.jobs = JobStore(document["workflows"][0]["jobs"])
        self.workflow = load_config(self.config).workflows[0]
        self.url = ""

    def daemon(self) -> None:
        self.procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], self.env, cwd=REPO_ROOT)
        # up before serve starts: two processes creating a fresh SQLite instance at once can stamp its schedule
        # database twice (Dagster: "Version table 'alembic_version' has more than one head present")
        with self.instance() as instance:
            wait_until(lambda: instance.get_daemon_heartbeats(), 180, "the daemon's first heartbeat", details=self.procs.logs)

    def serve(self, *extra: str, name: str = "serve") -> str:
        port = free_port()
        self.procs.start(name, [str(BIN / "ingest-pipelines"), "serve", "--port", str(port), *extra], self.env, cwd=REPO_ROOT)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answering(url), 180, f"{name} to answer", details=self.procs.logs)
        self.url = self.url or url
        return url

    def post(self, body: bytes) -> int:
        response = requests.post(f"{self.url}/ingest", data=body, timeout=120)
        assert response.status_code == 200, response.text
        return int(response.json()["job_id"])

    def complete(self, job_id: int, timeout: float = 300) -> dict[str, Any]:
        return wait_until(
            lambda: (state := get_state(self.url, job_id))["complete"] and state,
            timeout,
            f"job {job_id} to complete",
            details=self.procs.logs,
        )

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture
def deployment(tmp_path: Path, s3_server, s3) -> Any:
    made: list[Deployment] = []

    def make(instance_yaml: str | None = None, **workflow: Any) -> Deployment:
        document = bundle_config(s3_server, s3, tmp_path, **{"interval": "2s", "retryDelay": "1s", **workflow})
        made.append(Deployment(tmp_path, document, instance_yaml))
        return made[-1]

    yield make
    for each in made:
        each.procs.stop_all()


def _runs(instance: dg.DagsterInstance, job_id: int) -> list[dg.DagsterRun]:
    return sorted(
        instance.get_runs(filters=dg.RunsFilter(tags={"ingest/bundle_job": str(job_id)})), key=lambda r: int(r.tags["ingest/attempt"])
    )


def _finished_runs(instance: dg.DagsterInstance, job_id: int) -> list[dg.DagsterRun]:
    """The job's runs once none is in progress (a job is complete before its run's check step has run)."""
    return wait_until(lambda: (runs := _runs(instance, job_id)) and all(r.is_finished for r in runs) and runs, 120, "the runs to finish")


def _archived(s3: Any, job_id: int) -> dict[str, bytes]:
    prefix = f"{ARCHIVE_PREFIX}{job_id}/"
    return {key[len(prefix) :]: s3.get_object(Bucket=ARCHIVE_BUCKET, Key=key)["Body"].read() for key in keys(s3, ARCHIVE_BUCKET, prefix)}


def test_serve_with_the_documented_defaults_launches_runs_the_daemon_dequeues(deployment, s3) -> None:
    d = deployment(sensor="running", interval="120s")
    d.daemon()
    with d.instance() as instance:
        # the daemon ticks the drop sensor, so the instance knows which code location it loads
        wait_until(
            lambda: any(s.name == SENSOR for s in instance.all_instigator_state()),
            180,
            "the daemon's first drop sensor tick",
            details=d.procs.logs,
        )
        d.serve()  # no --workspace: the project's workspace.yaml in the working folder, as the daemon found it
        assert "code location 'ingest_pipelines' loaded from" in d.procs.log("serve")
        assert "code location 'ingest_pipelines' is the one the instance's dagster-daemon runs" in d.procs.log("serve")
        job_id = d.post(build_tar())
        state = d.complete(job_id)
        assert (state["state"], state["task"], state["exception"]) == ("OK", "ingest metadata", "")
        assert {path: data for path, data in _archived(s3, job_id).items() if path != "metadata.json"} == SAMPLE_FILES
        # the job is complete before its run's check step ends
        (run,) = _finished_runs(instance, job_id)
        assert run.remote_job_origin.location_name == "ingest_pipelines" and run.status == dg.DagsterRunStatus.SUCCESS
        # submitted by serve (not the sensor: its next tick is 2 minutes away) to the run queue, started by the daemon
        assert "dagster/sensor_name" not in run.tags and run.tags["ingest/attempt"] == "1"
        assert instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
        # a front door naming the location after its module (the old default) is told that the daemon will not start its runs
        d.serve("--module", "ingest_pipelines.definitions", name="serve-module")
        log = d.procs.log("serve-module")
        assert "runs the drop sensor in code location 'ingest_pipelines', but the front door submits runs to code location" in log
        assert "'ingest_pipelines.definitions'" in log


def test_a_killed_run_worker_is_retried_and_the_job_ends_ok_with_its_files(deployment, s3, http_server) -> None:
    held, release, calls = threading.Event(), threading.Event(), []

    def policy(request: Any) -> Response:
        calls.append(request)
        if len(calls) == 1:
            held.set()  # the first attempt's run worker is now inside "Policy Validation"
            release.wait(300)
        return Response(200, {"status": "success"})

    server = http_server(policy)
    # the drop sensor is stopped: serve's own reconciliation must retry
    d = deployment(policy={"url": f"{server.url}/ingest", "timeout": "300s"}, retryDelay="5s")
    d.daemon()
    d.serve()
    try:
        job_id = d.post(build_tar())
        wait_until(held.is_set, 240, "the first attempt to reach the policy service", details=d.procs.logs)
        with d.instance() as instance:
            (first,) = _runs(instance, job_id)
            pid = wait_until(lambda: run_worker_pid(instance, first.run_id), 60, "the run worker's pid")
            os.kill(pid, signal.SIGKILL)
            seen: set[str] = set()

            def complete() -> dict[str, Any] | None:
                state = get_state(d.url, job_id)
                seen.add(state["exception"])
                return state if state["complete"] else None

            state = wait_until(complete, 300, f"job {job_id} to complete", interval=0.3, details=d.procs.logs)
            assert (state["state"], state["task"], state["exception"]) == ("OK", "ingest metadata", ""), d.procs.logs()
            assert {path: data for path, data in _archived(s3, job_id).items() if path != "metadata.json"} == SAMPLE_FILES
            runs = _finished_runs(instance, job_id)
            assert [(r.tags["ingest/attempt"], r.status) for r in runs] == [
                ("1", dg.DagsterRunStatus.FAILURE),
                ("2", dg.DagsterRunStatus.SUCCESS),
            ]
            # why the first attempt failed: the job state said so while it waited for the retry
            assert any("attempt 1 of 20 failed" in e and "next attempt at" in e and runs[0].run_id in e for e in seen), seen
            reason = InstanceRuns(instance, d.workflow).failure_message(RunView(runs[0].run_id, "failed", 0.0))
            assert "signal 9 (SIGKILL)" in reason or "is gone" in reason, reason
            assert all(r.tags["dagster/max_retries"] == "0" for r in runs)
            assert d.jobs.get(job_id).attempt == 2
    finally:
        release.set()


def test_a_run_nobody_dequeues_ends_failed_with_the_reason_and_is_canceled(deployment, s3) -> None:
    d = deployment(launchTimeout="3s")  # the project's dagster.yaml (queued runs) and no daemon
    d.serve()
    assert "no dagster-daemon heartbeat on this instance" in d.procs.log("serve")
    job_id = d.post(build_tar())
    state = d.complete(job_id, timeout=120)
    assert state["state"] == "FAILED"
    assert "was not started within 3s: is a dagster-daemon running with code location 'ingest_pipelines'?" in state["exception"]
    with d.instance() as instance:
        (run,) = _runs(instance, job_id)
        assert run.status == dg.DagsterRunStatus.CANCELED and run.run_id in state["exception"]
    assert keys(s3, ARCHIVE_BUCKET) == []


def test_after_max_attempts_the_job_is_failed_with_the_last_reason(deployment, s3) -> None:
    d = deployment(DEFAULT_COORDINATOR, maxAttempts=2)
    s3.delete_bucket(Bucket=ARCHIVE_BUCKET)  # every attempt's run fails on S3 (not the bundle's fault)
    d.serve()
    job_id = d.post(build_tar())
    state = d.complete(job_id, timeout=240)
    assert state["state"] == "FAILED"
    assert state["exception"].startswith("gave up after 2 attempts (maxAttempts 2); attempt 2: run ")
    assert "NoSuchBucket" in state["exception"]
    with d.instance() as instance:
        runs = _finished_runs(instance, job_id)
        assert [(r.tags["ingest/attempt"], r.status) for r in runs] == [
            ("1", dg.DagsterRunStatus.FAILURE),
            ("2", dg.DagsterRunStatus.FAILURE),
        ]


def test_a_rejected_bundle_is_failed_at_once_and_not_retried(deployment, s3) -> None:
    d = deployment(DEFAULT_COORDINATOR)
    d.serve()
    bad = d.post(b"not a tar at all " * 100)
    state = d.complete(bad)
    assert (state["state"], state["task"]) == ("FAILED", "open tar") and "Failed to open tarfile." in state["exception"]
    # a job only serve's reconciliation loop launches: once it is complete, passes have run after the rejection
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/later.tar", Body=build_tar())
    etag = s3.head_object(Bucket=DROP_BUCKET, Key="incoming/later.tar")["ETag"].strip('"')
    later = d.jobs.create(WORKFLOW, "later.tar", etag, origin="sensor", task="open tar")
    assert d.complete(later.job_id)["state"] == "OK"
    with d.instance() as instance:
        assert [r.tags["ingest/attempt"] for r in _runs(instance, bad)] == ["1"]
    assert d.jobs.get(bad).attempt == 1
