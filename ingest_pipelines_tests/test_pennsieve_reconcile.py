"""The folders sensor reconciles the imports it requested, tick by tick on a real instance: an import whose
run failed is requested again after backoff and the re-run resumes the same importId; one in progress is
left alone; past maxAttempts it is loud (ERROR in the tick, skip reason, failing import_complete check)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import dagster as dg
import pytest

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions, reconcile
from ingest_pipelines.defs.reconcile import ATTEMPT_TAG
from ingest_pipelines_tests.pennsieve_support import TOKEN
from ingest_pipelines_tests.test_pennsieve_defs import document

pytest_plugins = ["ingest_pipelines_tests.pennsieve_fixtures"]

NAME = "umap_imports"
ASSET = dg.AssetKey([NAME, "import"])
JOB = f"{NAME}__import_job"
SENSOR = f"{NAME}__folders_sensor"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(reconcile, "clock", fake)
    return fake


@pytest.fixture
def defs(api, s3_server, s3, tmp_path, write_config, monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("PENNSIEVE_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    s3.create_bucket(Bucket="drop")
    s3.put_object(Bucket="drop", Key="incoming/run-1/a.parquet", Body=b"a" * 1000)
    s3.put_object(Bucket="drop", Key="incoming/run-1/b.parquet", Body=b"b" * 2000)
    doc = document(api.url, s3_server.endpoint_url, tmp_path, retryDelay="1m", maxAttempts=3)
    return build_definitions(load_config(write_config(doc)))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None, log: logging.Handler | None = None) -> dg.SensorResult:
    with dg.build_sensor_context(instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources) as context:
        if log is not None:
            context.log.addHandler(log)
        result = defs.resolve_sensor_def(SENSOR).evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    return result


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(JOB).execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=dict(request.tags), raise_on_error=False
    )


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    return {k: v.value for k, v in result.asset_materializations_for_node(f"{NAME}__import")[0].metadata.items()}


def tracked(result: dg.SensorResult) -> dict[str, dict]:
    return {entry["id"]: entry for entry in json.loads(result.cursor)["requests"]}


def test_a_failed_import_is_requested_again_and_resumes_its_import_id(defs, instance, api, clock) -> None:
    first = tick(defs, instance, None)
    (request,) = first.run_requests
    assert request.partition_key == "run-1" and request.tags[ATTEMPT_TAG] == "1" and request.tags["dagster/max_retries"] == "0"

    # the import is created, then the run fails before uploading (the credentials call is refused)
    api.fail("credentials", 400, body={"message": "try later"})
    failed = launch(defs, instance, request)
    assert not failed.success
    import_id = failed.failure_data_for_node(f"{NAME}__import").user_failure_data.metadata["import_id"].value
    assert import_id and len(api.calls("import")) == 1

    clock.advance(2)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == [] and "1 waiting to retry" in second.skip_message
    clock.advance(30)
    assert tick(defs, instance, second.cursor).run_requests == []  # retryDelay 1m: not before
    clock.advance(31)
    third = tick(defs, instance, second.cursor)
    (again,) = third.run_requests
    assert again.partition_key == "run-1" and again.tags[ATTEMPT_TAG] == "2"
    assert again.run_key == f"{request.run_key}:attempt-2"
    assert third.dynamic_partitions_requests == []  # the partition exists already

    # the re-run resumes the same import: no second POST /import, every file uploaded into it
    resumed = launch(defs, instance, again)
    assert resumed.success
    assert metadata(resumed)["import_id"] == import_id and metadata(resumed)["resumed"] is True
    assert metadata(resumed)["uploaded_files"] == 2 and len(api.calls("import")) == 1
    clock.advance(1)
    done = tick(defs, instance, third.cursor)
    assert done.run_requests == [] and tracked(done) == {}


def test_an_import_in_progress_is_not_requested_again(defs, instance, clock) -> None:
    first = tick(defs, instance, None)
    tags = {**first.run_requests[0].tags, "dagster/partition": "run-1"}
    run = instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTED, tags=tags))
    clock.advance(12 * 3600)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == [] and "1 in progress" in second.skip_message
    instance.report_run_failed(run)  # run monitoring found its worker gone
    clock.advance(1)
    third = tick(defs, instance, second.cursor)
    clock.advance(61)
    assert [r.tags[ATTEMPT_TAG] for r in tick(defs, instance, third.cursor).run_requests] == ["2"]


def test_an_import_that_keeps_failing_gives_up_loudly(defs, instance, api, clock) -> None:
    cursor = tick(defs, instance, None).cursor
    for attempt in (1, 2, 3):
        tags = {"ingest/workflow": "umap-imports", ATTEMPT_TAG: str(attempt), "dagster/partition": "run-1"}
        instance.report_run_failed(instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTED, tags=tags)))
        clock.advance(1)
        log = Records()
        result = tick(defs, instance, cursor, log=log)
        cursor = result.cursor
        clock.advance(3600)
        if attempt < 3:
            retry = tick(defs, instance, cursor)
            assert [r.tags[ATTEMPT_TAG] for r in retry.run_requests] == [str(attempt + 1)]
            cursor = retry.cursor
    # maxAttempts 3: no fourth request, an ERROR line, the skip reason, the failing check on the folder
    assert result.run_requests == [] and "1 GAVE UP" in result.skip_message and "run-1" in result.skip_message
    assert any(
        level == logging.ERROR and "gave up after 3 attempt(s)" in line and "resumes the same import" in line for level, line in log.lines
    )
    (evaluation,) = result.asset_events
    assert evaluation.check_name == "import_complete" and evaluation.partition == "run-1" and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert tick(defs, instance, cursor).run_requests == []
    assert api.requests == []
