"""The bundle workflow in Dagster: Definitions names, the drop sensor tick by tick (new jobs, attempts, retries of
dead runs on a real instance), the asset run keeping the job state in step (good and rejected bundles, stale
attempts) and the per-partition asset check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingest_pipelines.bundles.jobs import JobStore
from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines_tests.bundle_fixtures import ARCHIVE_BUCKET, ARCHIVE_PREFIX, DROP_BUCKET, SAMPLE_FILES, build_tar, bundle_config, keys
from ingest_pipelines_tests.deploy_fixtures import wait_until

ASSET = dg.AssetKey(["pacifica_bundles", "bundle"])
JOB = "pacifica_bundles__ingest_job"
SENSOR = "pacifica_bundles__drop_sensor"
PARTITIONS = "pacifica_bundles__bundles"


@pytest.fixture
def setup(s3_server, s3, tmp_path, write_config) -> dict[str, Any]:
    path = write_config(bundle_config(s3_server, s3, tmp_path, sensor="running", cleanUp=False))
    config = load_config(path)
    defs = build_definitions(config)
    workflow = config.workflows[0]
    return {"defs": defs, "jobs": JobStore(workflow.jobs_url(config)), "s3": s3, "config": config}


def test_sample_config_builds_the_names(setup: dict[str, Any]) -> None:
    defs: dg.Definitions = setup["defs"]
    repo = defs.get_repository_def()
    assert ASSET in repo.assets_defs_by_key
    # the run failure sensor of earlier versions is gone: the drop sensor's reconciliation does its work
    assert {s.name for s in repo.sensor_defs} == {SENSOR}
    assert repo.get_sensor_def(SENSOR).default_status == dg.DefaultSensorStatus.RUNNING
    assert repo.get_sensor_def(SENSOR).minimum_interval_seconds == 29  # interval 30s, a second under: defs/ticks.py
    assert JOB in {job.name for job in repo.get_all_jobs()}
    check_keys = {key for checks in defs.asset_checks or [] for key in checks.check_keys}
    assert check_keys == {dg.AssetCheckKey(ASSET, "archive_matches_metadata")}
    assert isinstance(repo.assets_defs_by_key[ASSET].partitions_def, dg.DynamicPartitionsDefinition)
    assert "source_dropbox" in repo.get_top_level_resources() and "destination_archive" in repo.get_top_level_resources()


def _tick(setup: dict[str, Any], instance: dg.DagsterInstance, cursor: str | None = None) -> Any:
    """One evaluation as the daemon does it (resources from the Definitions)."""
    sensor = setup["defs"].get_sensor_def(SENSOR)
    repository = setup["defs"].get_repository_def()
    # instance_ref, as the daemon passes: partitions requested in the same result then count as existing
    with dg.build_sensor_context(
        instance_ref=instance.get_ref(), cursor=cursor, resources=setup["defs"].resources, repository_def=repository
    ) as context:
        return sensor.evaluate_tick(context)


def test_drop_sensor_creates_jobs_partitions_and_run_requests(setup: dict[str, Any], instance: dg.DagsterInstance) -> None:
    s3 = setup["s3"]
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/a.tar", Body=build_tar())
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/sub/b.tar.gz", Body=build_tar(compress=True))
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/readme.txt", Body=b"not a bundle")
    result = _tick(setup, instance)
    requests = result.run_requests or []
    assert sorted(r.tags["ingest/drop_key"] for r in requests) == ["a.tar", "sub/b.tar.gz"]
    partition_keys = sorted(r.partition_key for r in requests)
    assert result.dynamic_partitions_requests[0].partition_keys == [r.partition_key for r in requests]
    jobs = [setup["jobs"].get(int(key)) for key in partition_keys]
    assert {(j.state, j.task, j.origin, j.complete, j.attempt) for j in jobs} == {("OK", "open tar", "sensor", False, 1)}
    # one run per attempt: its run key and tags name the job and the attempt; Dagster's own run retries are off
    for request in requests:
        assert request.run_key == f"job-{request.partition_key}-attempt-1"
        assert request.tags["ingest/bundle_job"] == request.partition_key and request.tags["ingest/attempt"] == "1"
        assert request.tags["dagster/max_retries"] == "0"
    assert json.loads(result.cursor) == {"after": None}
    # the same objects again: the attempts are claimed and their runs about to be created, nothing new is requested
    assert _tick(setup, instance, result.cursor).run_requests == []
    # ...and a new version of a.tar is a new job
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/a.tar", Body=build_tar(metadata_first=False))
    newer = _tick(setup, instance, result.cursor).run_requests
    assert len(newer) == 1 and newer[0].partition_key not in partition_keys


def test_drop_sensor_listing_is_bounded_and_resumes(s3_server, s3, tmp_path, write_config, instance) -> None:
    from ingest_pipelines.bundles.drop import scan_drop
    from ingest_pipelines.storage import open_store

    config = load_config(write_config(bundle_config(s3_server, s3, tmp_path)))
    workflow = config.workflows[0]
    for index in range(5):
        s3.put_object(Bucket=DROP_BUCKET, Key=f"incoming/{index}.tar", Body=b"x")
    store, jobs = open_store(config.source("dropbox")), JobStore(workflow.jobs_url(config))
    first = scan_drop(store, jobs, workflow, None, max_pages=1, seconds=10, page_size=2)
    assert (len(first.new_jobs), first.after, first.wrapped) == (2, "1.tar", False)
    second = scan_drop(store, jobs, workflow, first.after, max_pages=5, seconds=10, page_size=2)
    assert (len(second.new_jobs), second.after, second.wrapped) == (3, None, True)


def _materialize(
    setup: dict[str, Any], instance: dg.DagsterInstance, partition: str, attempt: int | None = None
) -> dg.ExecuteInProcessResult:
    """A run of the partition, as the sensor's run request makes it (tagged with the job's current attempt)."""
    job = setup["defs"].resolve_job_def(JOB)
    if attempt is None:
        attempt = setup["jobs"].get(int(partition)).attempt
    tags = {"ingest/bundle_job": partition, "ingest/attempt": str(attempt)}
    return job.execute_in_process(instance=instance, partition_key=partition, raise_on_error=False, tags=tags)


def test_run_ingests_a_good_bundle_and_the_check_passes(setup: dict[str, Any], instance: dg.DagsterInstance) -> None:
    setup["s3"].put_object(Bucket=DROP_BUCKET, Key="incoming/good.tar", Body=build_tar())
    result = _tick(setup, instance)
    partition = result.run_requests[0].partition_key
    instance.add_dynamic_partitions(PARTITIONS, [partition])
    run = _materialize(setup, instance, partition)
    assert run.success
    job = setup["jobs"].get(int(partition))
    assert (job.state, job.task, job.task_percent, job.complete, job.run_id) == ("OK", "ingest metadata", 100.0, True, run.run_id)
    materialization = run.asset_materializations_for_node("pacifica_bundles__bundle")[0]
    assert materialization.metadata["files"].value == len(SAMPLE_FILES) and materialization.metadata["job_id"].value == int(partition)
    checks = run.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("archive_matches_metadata", True)]
    archived = keys(setup["s3"], ARCHIVE_BUCKET)
    assert archived == sorted(f"{ARCHIVE_PREFIX}{partition}/{p}" for p in [*SAMPLE_FILES, "metadata.json"])


def test_a_rejected_bundle_fails_the_run_and_the_job(setup: dict[str, Any], instance: dg.DagsterInstance) -> None:
    setup["s3"].put_object(Bucket=DROP_BUCKET, Key="incoming/bad.tar", Body=b"garbage, not a tar" * 100)
    partition = _tick(setup, instance).run_requests[0].partition_key
    instance.add_dynamic_partitions(PARTITIONS, [partition])
    run = _materialize(setup, instance, partition)
    assert not run.success
    job = setup["jobs"].get(int(partition))
    assert (job.state, job.task, job.complete) == ("FAILED", "open tar", True)
    assert "Failed to open tarfile." in job.exception
    failure = next(e for e in run.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "FAILED at 'open tar'" in failure.step_failure_data.error.message
    assert keys(setup["s3"], ARCHIVE_BUCKET) == []


def test_a_second_run_of_a_job_while_one_executes_stops_and_changes_nothing(setup: dict[str, Any], instance: dg.DagsterInstance) -> None:
    # two runs of one job would clear each other's staging (seen live: run SUCCESS, job FAILED, archive complete)
    setup["s3"].put_object(Bucket=DROP_BUCKET, Key="incoming/good.tar", Body=build_tar())
    partition = _tick(setup, instance).run_requests[0].partition_key
    instance.add_dynamic_partitions(PARTITIONS, [partition])
    executing = instance.add_run(
        dg.DagsterRun(
            job_name=JOB,
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": partition, "ingest/workflow": "pacifica-bundles", "ingest/bundle_job": partition},
        )
    )
    jobs: JobStore = setup["jobs"]
    jobs.update(int(partition), task="ingest files", task_percent=30, run_id=executing.run_id)
    staged = f"{ARCHIVE_PREFIX}{partition}/mywork/project/proposal.doc"
    setup["s3"].put_object(Bucket=ARCHIVE_BUCKET, Key=staged, Body=b"written by the executing run")
    run = _materialize(setup, instance, partition)
    assert not run.success
    failure = run.failure_data_for_node("pacifica_bundles__bundle")
    assert f"being processed by run {executing.run_id}" in failure.user_failure_data.description
    job = jobs.get(int(partition))
    assert (job.state, job.task, job.task_percent, job.run_id) == ("OK", "ingest files", 30.0, executing.run_id)
    assert keys(setup["s3"], ARCHIVE_BUCKET) == [staged]
    # reconciliation leaves a job whose run is executing alone
    assert not _tick(setup, instance).run_requests
    assert jobs.get(int(partition)).task_percent == 30.0 and keys(setup["s3"], ARCHIVE_BUCKET) == [staged]
    # once that run is over, the partition runs again
    instance.report_run_failed(executing)
    assert _materialize(setup, instance, partition).success and jobs.get(int(partition)).complete


def test_check_fails_when_the_archive_was_tampered_with(setup: dict[str, Any], instance: dg.DagsterInstance) -> None:
    setup["s3"].put_object(Bucket=DROP_BUCKET, Key="incoming/good.tar", Body=build_tar())
    partition = _tick(setup, instance).run_requests[0].partition_key
    instance.add_dynamic_partitions(PARTITIONS, [partition])
    assert _materialize(setup, instance, partition).success
    setup["s3"].put_object(Bucket=ARCHIVE_BUCKET, Key=f"{ARCHIVE_PREFIX}{partition}/intruder.bin", Body=b"x")
    setup["s3"].delete_object(Bucket=ARCHIVE_BUCKET, Key=f"{ARCHIVE_PREFIX}{partition}/empty.txt")
    # re-running a complete partition does not ingest again; its check then sees the tampered archive
    run = _materialize(setup, instance, partition)
    assert run.asset_materializations_for_node("pacifica_bundles__bundle")[0].metadata["skipped"].value is True
    evaluation = run.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert evaluation.metadata["unexpected"].value == ["intruder.bin"] and evaluation.metadata["missing"].value == ["empty.txt"]
    assert evaluation.metadata["committed"].value is True


def test_drop_sensor_retries_a_dead_run_and_removes_what_it_left(s3_server, s3, tmp_path, write_config, instance) -> None:
    path = write_config(bundle_config(s3_server, s3, tmp_path, sensor="running", retryDelay="1s", maxAttempts=2))
    config = load_config(path)
    setup = {"defs": build_definitions(config), "jobs": JobStore(config.workflows[0].jobs_url(config)), "s3": s3}
    s3.put_object(Bucket=DROP_BUCKET, Key="incoming/x.tar", Body=build_tar())
    (request,) = _tick(setup, instance).run_requests
    job_id = int(request.partition_key)
    # what a killed run leaves: files of the job, an unfinished multipart upload, an older version's staging
    for key in (f"{job_id}/a.bin", f"{job_id}/sub/b.bin", f".staging/{job_id}/c.bin", f"{job_id}0/other-job"):
        s3.put_object(Bucket=ARCHIVE_BUCKET, Key=ARCHIVE_PREFIX + key, Body=b"x")
    s3.create_multipart_upload(Bucket=ARCHIVE_BUCKET, Key=f"{ARCHIVE_PREFIX}{job_id}/big.bin")
    setup["jobs"].update(job_id, task="ingest files", task_percent=40)
    # the run of attempt 1 died; run monitoring failed it
    tags = {**request.tags, "ingest/workflow": "pacifica-bundles", "dagster/partition": str(job_id)}
    run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job(), tags=tags)
    instance.report_run_failed(run, "run worker pid 4242 is gone (no such process)")
    assert _tick(setup, instance).run_requests == []
    waiting = setup["jobs"].get(job_id)
    assert (waiting.state, waiting.task, waiting.complete, waiting.attempt) == ("OK", "ingest files", False, 1)
    assert "attempt 1 of 2 failed" in waiting.exception and "next attempt at" in waiting.exception
    assert keys(s3, ARCHIVE_BUCKET) == [f"{ARCHIVE_PREFIX}{job_id}0/other-job"]
    assert s3.list_multipart_uploads(Bucket=ARCHIVE_BUCKET).get("Uploads", []) == []
    # after retryDelay the next tick requests attempt 2
    retry = wait_until(lambda: _tick(setup, instance).run_requests, 30, "the retry's run request")
    assert [(r.partition_key, r.tags["ingest/attempt"]) for r in retry] == [(str(job_id), "2")]
    # a run of attempt 1 turning up late stops without touching the job
    instance.add_dynamic_partitions(PARTITIONS, [str(job_id)])
    late = _materialize(setup, instance, str(job_id), attempt=1)
    assert not late.success and "attempt 1" in late.failure_data_for_node("pacifica_bundles__bundle").user_failure_data.description
    assert setup["jobs"].get(job_id).attempt == 2
    # attempt 2 ingests
    assert _materialize(setup, instance, str(job_id), attempt=2).success
    done = setup["jobs"].get(job_id)
    assert (done.state, done.complete, done.exception) == ("OK", True, "")
    assert Path(config.path).exists()


def test_demo_seed_gives_a_loadable_workflow_and_a_good_sample(s3_server, s3, tmp_path, write_config, instance) -> None:
    from ingest_pipelines.bundles.demo import seed
    from ingest_pipelines.demo import DemoContext

    ctx = DemoContext(endpoint_url=s3_server.endpoint_url, s3=s3, workdir=tmp_path)
    document = seed(ctx)
    document["state"] = {"type": "filesystem", "path": str(tmp_path / "state")}
    config = load_config(write_config(document))
    setup = {"defs": build_definitions(config), "jobs": JobStore(config.workflows[0].jobs_url(config)), "s3": s3}
    partition = _tick(setup, instance).run_requests[0].partition_key
    instance.add_dynamic_partitions(PARTITIONS, [partition])
    assert _materialize(setup, instance, partition).success
    assert setup["jobs"].get(int(partition)).state == "OK"
    assert len(keys(s3, "bundle-archive")) == 4
