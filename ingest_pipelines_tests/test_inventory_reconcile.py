"""The inventory sensor reconciles the reports it requested, tick by tick on a real instance: a date whose
run failed is requested again after backoff (not before), a queued or running one is left alone, a request
whose run never appeared counts as a failed attempt, attempts run out loudly, and a success ends it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions, reconcile
from ingest_pipelines.defs.inventory.assets import REPORT_TAG
from ingest_pipelines.defs.reconcile import ATTEMPT_TAG
from ingest_pipelines_tests import inventory_fixtures
from ingest_pipelines_tests.inventory_fixtures import INVENTORY, InventoryScene

ASSET = dg.AssetKey(["faces_index", "indexed"])
SENSOR = "faces_index__inventory_sensor"
JOB = "faces_index__index_job"
REPORT = "inv/images/daily/2024-05-01T01-00Z/manifest.json"

gateway = inventory_fixtures.gateway
scene = inventory_fixtures.scene


class Clock:
    """The sensor's clock, stepped by the test (starts now: runs the test creates are not older)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(reconcile, "clock", fake)
    return fake


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= logging.ERROR]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def definitions(scene: InventoryScene, write_config, **workflow) -> dg.Definitions:
    return build_definitions(load_config(write_config(scene.config_document(retryDelay="1m", **workflow))))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, log: logging.Handler | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, definitions=defs)
    if log is not None:
        context.log.addHandler(log)
    result = defs.resolve_sensor_def(SENSOR).evaluate_tick(context)
    for event in result.asset_events:  # as the daemon does with a tick's asset events
        instance.report_runless_asset_event(event)
    return result


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Run a request for real, with its tags, as the daemon would."""
    return defs.resolve_job_def(JOB).execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=dict(request.tags), raise_on_error=False
    )


def add_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus, attempt: int, partition: str = "2024-05-01") -> dg.DagsterRun:
    """A run of the report in a given status, made with the instance's API (a daemon's run, or a user's)."""
    tags = {REPORT_TAG: REPORT, ATTEMPT_TAG: str(attempt), "dagster/partition": partition}
    # a queued run names the code location its run will be launched from
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("ingest_pipelines"), "__repository__"), JOB)
    return instance.add_run(dg.DagsterRun(job_name=JOB, status=status, tags=tags, remote_job_origin=origin))


def tracked(result: dg.SensorResult) -> dict[str, dict]:
    return {entry["id"]: entry for entry in json.loads(result.cursor)["requests"]}


def test_a_failed_date_is_requested_again_after_backoff_and_a_success_ends_it(scene, write_config, instance, clock) -> None:
    defs = definitions(scene, write_config)
    scene.put_image("a.png", {"UserId": "a"})
    ref = scene.report("2024-05-01T01-00Z")
    checksum = scene.s3.get_object(Bucket=INVENTORY, Key=ref.checksum_key)["Body"].read().decode().strip()
    first = tick(defs, instance, None)
    (request,) = first.run_requests
    assert request.tags[REPORT_TAG] == REPORT and request.tags[ATTEMPT_TAG] == "1"
    # attempts are counted by the sensor, once: Dagster's own run retries are off for these runs
    assert request.tags["dagster/max_retries"] == "0"
    assert tracked(first)[REPORT]["attempts"] == 1

    # the run fails (here: an S3 error reading the manifest; in production also a killed worker, failed by run monitoring)
    good = scene.s3.get_object(Bucket=INVENTORY, Key=ref.manifest_key)["Body"].read()
    scene.s3.delete_object(Bucket=INVENTORY, Key=ref.manifest_key)
    assert not launch(defs, instance, request).success
    clock.advance(5)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []
    assert "1 waiting to retry" in second.skip_message
    entry = tracked(second)[REPORT]
    assert entry["failed_at"] and "ended FAILURE" in entry["reason"]

    # retryDelay 1m: not before
    clock.advance(40)
    assert tick(defs, instance, second.cursor).run_requests == []
    clock.advance(30)
    third = tick(defs, instance, second.cursor)
    (again,) = third.run_requests
    assert again.run_key == f"{REPORT}:{checksum}:attempt-2"
    assert again.partition_key == "2024-05-01" and again.tags[ATTEMPT_TAG] == "2" and again.tags["dagster/max_retries"] == "0"
    assert again.tags[REPORT_TAG] == REPORT

    # the cause is gone; attempt 2 runs idempotently and succeeds: the report is no longer followed
    scene.s3.put_object(Bucket=INVENTORY, Key=ref.manifest_key, Body=good)
    assert launch(defs, instance, again).success
    clock.advance(5)
    fourth = tick(defs, instance, third.cursor)
    assert fourth.run_requests == [] and tracked(fourth) == {}
    clock.advance(3600)
    assert tick(defs, instance, fourth.cursor).run_requests == []
    assert len(scene.gateway.registrations) == 1


@pytest.mark.parametrize("status", [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
def test_a_queued_or_running_date_is_not_requested_again(scene, write_config, instance, clock, status) -> None:
    defs = definitions(scene, write_config)
    scene.report("2024-05-01T01-00Z")
    first = tick(defs, instance, None)
    assert len(first.run_requests) == 1
    run = add_run(instance, status, attempt=1)
    # hours later (ingest/serial queues dates one at a time; a backfill before it can take long)
    clock.advance(6 * 3600)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == [] and "1 in progress" in second.skip_message
    assert tracked(second)[REPORT]["attempts"] == 1
    # the run dies; run monitoring fails it: now it is requested again after backoff
    instance.report_run_failed(run)
    clock.advance(1)
    third = tick(defs, instance, second.cursor)
    assert third.run_requests == []
    clock.advance(61)
    (again,) = tick(defs, instance, third.cursor).run_requests
    assert again.tags[ATTEMPT_TAG] == "2"


def test_a_request_whose_run_never_appeared_is_a_failed_attempt(scene, write_config, instance, clock) -> None:
    # the daemon died between the tick and creating the run, or the run stayed NOT_STARTED (never queued)
    defs = definitions(scene, write_config, launchTimeout="5m")
    scene.report("2024-05-01T01-00Z")
    first = tick(defs, instance, None)
    clock.advance(60)
    assert tick(defs, instance, first.cursor).run_requests == []  # within launchTimeout: being created
    clock.advance(300)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == [] and "no run of attempt 1 appeared within launchTimeout" in tracked(second)[REPORT]["reason"]
    clock.advance(61)
    (again,) = tick(defs, instance, second.cursor).run_requests
    assert again.tags[ATTEMPT_TAG] == "2"


def test_attempts_run_out_loudly_and_nothing_more_is_requested(scene, write_config, instance, clock) -> None:
    defs = definitions(scene, write_config, maxAttempts=2)
    scene.report("2024-05-01T01-00Z")
    cursor = tick(defs, instance, None).cursor
    instance.report_run_failed(add_run(instance, dg.DagsterRunStatus.STARTED, attempt=1))
    clock.advance(1)
    cursor = tick(defs, instance, cursor).cursor
    clock.advance(61)
    retry = tick(defs, instance, cursor)
    assert [r.tags[ATTEMPT_TAG] for r in retry.run_requests] == ["2"]
    instance.report_run_failed(add_run(instance, dg.DagsterRunStatus.STARTED, attempt=2))
    clock.advance(1)
    tick_log = Records()
    stuck = tick(defs, instance, retry.cursor, log=tick_log)
    assert stuck.run_requests == []
    assert "1 GAVE UP" in stuck.skip_message and REPORT in stuck.skip_message
    assert any("gave up after 2 attempt(s)" in line and "to retry: materialize" in line for line in tick_log.errors())
    # where the user looks: the date's no_failures check fails, with the reason and how to re-run it
    (evaluation,) = stuck.asset_events
    assert isinstance(evaluation, dg.AssetCheckEvaluation)
    assert (evaluation.passed, evaluation.severity, evaluation.partition) == (False, dg.AssetCheckSeverity.ERROR, "2024-05-01")
    assert "gave up after 2 attempt(s)" in evaluation.metadata["reason"].value
    assert "materialize the date's partition" in evaluation.metadata["to_retry"].value
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([dg.AssetCheckKey(ASSET, "no_failures")])
    assert record[dg.AssetCheckKey(ASSET, "no_failures")].event.dagster_event.event_specific_data.passed is False

    # days later: still loud in every tick, still not requested, the check emitted once
    clock.advance(3 * 86400)
    tick_log = Records()
    later = tick(defs, instance, stuck.cursor, log=tick_log)
    assert later.run_requests == [] and later.asset_events == [] and "1 GAVE UP" in later.skip_message
    assert any("gave up" in line for line in tick_log.errors())

    # a user re-runs the date (a backfill run has no report tag) and it succeeds: the report is done
    instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.SUCCESS, tags={"dagster/partition": "2024-05-01"}))
    done = tick(defs, instance, later.cursor)
    assert tracked(done) == {} and done.run_requests == []


def test_runs_of_another_report_of_the_date_do_not_count(scene, write_config, instance, clock) -> None:
    defs = definitions(scene, write_config)
    scene.report("2024-05-01T01-00Z")
    cursor = tick(defs, instance, None).cursor
    other = {REPORT_TAG: "inv/images/other/2024-05-01T02-00Z/manifest.json", "dagster/partition": "2024-05-01"}
    instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.SUCCESS, tags=other))
    instance.report_run_failed(add_run(instance, dg.DagsterRunStatus.STARTED, attempt=1))
    clock.advance(1)
    seen = tick(defs, instance, cursor)
    # the other report's success does not end this one's tracking: its own attempt failed
    assert seen.run_requests == [] and tracked(seen)[REPORT]["failed_at"]
    clock.advance(61)
    (again,) = tick(defs, instance, seen.cursor).run_requests
    assert again.tags[ATTEMPT_TAG] == "2" and again.tags[REPORT_TAG] == REPORT


def test_a_tick_looks_up_a_bounded_number_of_requests_in_turn(instance, clock, monkeypatch) -> None:
    from ingest_pipelines.defs.reconcile import SensorRequests
    from ingest_pipelines.retries import RetryPolicy

    monkeypatch.setattr(reconcile, "MAX_LOOKUPS_PER_TICK", 2)
    requests = SensorRequests([], RetryPolicy(60, 3), launch_timeout=300)
    for index in range(5):
        requests.track(f"r{index}", f"2024-05-0{index + 1}", f"k{index}", {}, clock())
    looked: list[str] = []
    for _ in range(3):
        clock.advance(1)
        before = {request_id: entry.looked_at for request_id, entry in requests.entries.items()}
        result = requests.reconcile(instance, lambda run, request: True, clock())
        assert result.looked_up == 2
        looked += sorted(request_id for request_id, entry in requests.entries.items() if entry.looked_at != before[request_id])
    # every request had its turn: none is starved by the ones ahead of it
    assert set(looked) == {f"r{index}" for index in range(5)}


def test_past_the_bound_the_requests_that_gave_up_are_dropped_first(instance, clock, monkeypatch) -> None:
    from ingest_pipelines.defs.reconcile import SensorRequests
    from ingest_pipelines.retries import RetryPolicy

    monkeypatch.setattr(reconcile, "MAX_TRACKED", 3)
    requests = SensorRequests([], RetryPolicy(60, 3), launch_timeout=300)
    for index in range(4):
        requests.track(f"r{index}", "2024-05-01", f"k{index}", {}, clock())
    requests.entries["r2"].gave_up = True
    result = requests.reconcile(instance, lambda run, request: True, clock())
    assert [entry.id for entry in result.dropped] == ["r2"]
    assert sorted(requests.entries) == ["r0", "r1", "r3"]
