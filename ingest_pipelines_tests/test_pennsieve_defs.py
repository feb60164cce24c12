"""`pennsieve` workflows in Dagster: the sample config's names, the folders sensor tick by tick, a partition
materialized (and re-run: the same import resumes) on a real instance, the import_complete check, the demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.demo import DemoContext
from ingest_pipelines_tests.pennsieve_support import DATASET, PACKAGE, RUN_ID, TOKEN, uploaded

pytest_plugins = ["ingest_pipelines_tests.pennsieve_fixtures"]

NAME = "umap_imports"
ASSET = dg.AssetKey([NAME, "import"])
JOB = f"{NAME}__import_job"
SENSOR = f"{NAME}__folders_sensor"
PARTITIONS = f"{NAME}__imports"


def document(api_url: str, endpoint: str, tmp_path: Path, **workflow: Any) -> dict[str, Any]:
    return {
        "sources": [
            {
                "name": "drop",
                "type": "s3",
                "endpoint": endpoint,
                "region": "us-east-1",
                "bucket": "drop",
                "prefix": "incoming/",
                "accessKeyID": "$AWS_ACCESS_KEY_ID",
                "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
            }
        ],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
        "workflows": [
            {
                "name": "umap-imports",
                "kind": "pennsieve",
                "source": "drop",
                "apiHost": api_url,
                "datasetId": DATASET,
                "packageId": PACKAGE,
                "executionRunId": RUN_ID,
                "callbackToken": "$PENNSIEVE_TOKEN",
                "propertiesFile": "properties.json",
                "settleDelay": "0s",
                "interval": "30s",
                "sensor": "running",
                **workflow,
            }
        ],
    }


@pytest.fixture
def setup(api, s3_server, s3, tmp_path, write_config, monkeypatch) -> dict[str, Any]:
    monkeypatch.setenv("PENNSIEVE_TOKEN", TOKEN)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    s3.create_bucket(Bucket="drop")
    files = {
        "incoming/run-1/a.parquet": b"a" * 1000,
        "incoming/run-1/sub/b.parquet": b"b" * 3000,
        "incoming/run-1/properties.json": json.dumps({"title": "run 1"}).encode(),
        "incoming/run-2/c.parquet": b"c" * 10,
    }
    for key, body in files.items():
        s3.put_object(Bucket="drop", Key=key, Body=body)
    config = load_config(write_config(document(api.url, s3_server.endpoint_url, tmp_path)))
    return {"config": config, "defs": build_definitions(config), "files": files}


def test_sample_config_names(api, s3_server, tmp_path, write_config) -> None:
    defs = build_definitions(load_config(write_config(document(api.url, s3_server.endpoint_url, tmp_path))))
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {ASSET}
    assert set(graph.asset_check_keys) == {dg.AssetCheckKey(ASSET, "import_complete")}
    assert graph.get(ASSET).pools == {"pennsieve"}
    assert isinstance(graph.get(ASSET).partitions_def, dg.DynamicPartitionsDefinition)
    job = defs.resolve_job_def(JOB)
    assert job.partitions_def.name == PARTITIONS
    sensor = defs.resolve_sensor_def(SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 29
    token = defs.resources[f"pennsieve_{NAME}"].callback_token
    assert isinstance(token, dg.EnvVar) and token.env_var_name == "PENNSIEVE_TOKEN"
    assert {"source_drop", "ingest_state", f"pennsieve_{NAME}"} <= set(defs.resources)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"callbackToken": None}, "callbackToken"),
        ({"destinations": ["x"]}, "destination"),
        ({"apiHost": "api2.pennsieve.net"}, "apiHost must be an http"),
        ({"datasetId": None}, "datasetId"),
        ({"propertiesFile": "/etc/props.json"}, "propertiesFile is a path inside each import folder"),
        ({"propertiesFile": "../props.json"}, "propertiesFile is a path inside each import folder"),
    ],
)
def test_config_errors(api, s3_server, tmp_path, write_config, change: dict, message: str) -> None:
    doc = document(api.url, s3_server.endpoint_url, tmp_path)
    doc["destinations"] = [{"name": "x", "type": "filesystem", "path": str(tmp_path)}]
    for key, value in change.items():
        if value is None:
            doc["workflows"][0].pop(key)
        else:
            doc["workflows"][0][key] = value
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(doc))


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(SENSOR)
    # an instance_ref lets the tick validate partition keys against the partitions it is adding
    with dg.build_sensor_context(instance_ref=instance.get_ref(), cursor=cursor, definitions=defs, resources=defs.resources) as context:
        result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sensor_adds_a_partition_per_settled_folder(setup, instance, s3) -> None:
    defs = setup["defs"]
    first = _tick(defs, instance, None)
    assert [r.partition_key for r in first.run_requests] == ["run-1", "run-2"]
    assert all(r.job_name in (None, JOB) for r in first.run_requests)
    assert instance.get_dynamic_partitions(PARTITIONS) == ["run-1", "run-2"]

    second = _tick(defs, instance, first.cursor)
    assert second.run_requests == [] and second.skip_message

    # a folder made in the S3 console first holds only its marker: not ready (it became an empty import, and the
    # files uploaded after it were never imported)
    s3.put_object(Bucket="drop", Key="incoming/run-3/", Body=b"")
    s3.put_object(Bucket="drop", Key="incoming/run-3/sub/", Body=b"")
    markers_only = _tick(defs, instance, second.cursor)
    assert markers_only.run_requests == []
    s3.put_object(Bucket="drop", Key="incoming/run-3/d.parquet", Body=b"d")
    third = _tick(defs, instance, markers_only.cursor)
    assert [r.partition_key for r in third.run_requests] == ["run-3"]


def test_sensor_waits_for_folders_to_settle_and_bounds_each_tick(api, s3_server, s3, tmp_path, write_config, instance, monkeypatch) -> None:
    monkeypatch.setenv("PENNSIEVE_TOKEN", TOKEN)
    s3.create_bucket(Bucket="drop")
    for i in range(3):
        s3.put_object(Bucket="drop", Key=f"incoming/f{i}/x.parquet", Body=b"x")
    settling = build_definitions(load_config(write_config(document(api.url, s3_server.endpoint_url, tmp_path, settleDelay="1h"))))
    assert _tick(settling, instance, None).run_requests == []
    batched = build_definitions(load_config(write_config(document(api.url, s3_server.endpoint_url, tmp_path, batchSize=2), "b.yaml")))
    first = _tick(batched, instance, None)
    assert [r.partition_key for r in first.run_requests] == ["f0", "f1"]
    second = _tick(batched, instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["f2"]


def _events(instance: dg.DagsterInstance) -> str:
    text = ""
    for run in instance.get_runs():
        text += repr(run.run_config) + repr(run.tags)
        for entry in instance.all_logs(run.run_id):
            text += repr(entry)
    return text


def test_materialize_a_partition_then_rerun_resumes_the_same_import(setup, instance, api, s3) -> None:
    defs, files = setup["defs"], setup["files"]
    instance.add_dynamic_partitions(PARTITIONS, ["run-1"])
    job = defs.resolve_job_def(JOB)
    result = job.execute_in_process(instance=instance, partition_key="run-1")
    assert result.success
    metadata = result.asset_materializations_for_node(f"{NAME}__import")[0].metadata
    import_id = metadata["import_id"].value
    assert (metadata["files"].value, metadata["bytes"].value, metadata["uploaded_files"].value) == (2, 4000, 2)
    assert metadata["resumed"].value is False and metadata["duration_seconds"].value >= 0
    body = api.calls("import")[0].json()
    assert body["options"]["properties"] == {"title": "run 1"}
    assert sorted(f["file_path"] for f in body["files"]) == ["a.parquet", "sub/b.parquet"]
    source = {f["file_path"]: files[f"incoming/run-1/{f['file_path']}"] for f in body["files"]}
    assert uploaded(s3) == {f"{import_id}/{f['upload_key']}": source[f["file_path"]] for f in body["files"]}
    check = result.get_asset_check_evaluations()[0]
    assert check.passed and check.metadata["import_id"].value == import_id

    again = job.execute_in_process(instance=instance, partition_key="run-1")
    metadata = again.asset_materializations_for_node(f"{NAME}__import")[0].metadata
    assert metadata["import_id"].value == import_id and metadata["resumed"].value is True
    assert (metadata["uploaded_files"].value, metadata["skipped_files"].value) == (0, 2)
    assert len(api.calls("import")) == 1
    assert TOKEN not in _events(instance)


def test_a_second_run_of_a_folder_while_one_executes_creates_no_import(setup, instance, api) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["run-1"])
    executing = instance.add_run(dg.DagsterRun(job_name=JOB, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "run-1"}))
    job = setup["defs"].resolve_job_def(JOB)
    result = job.execute_in_process(instance=instance, partition_key="run-1", raise_on_error=False)
    assert not result.success
    assert executing.run_id in result.failure_data_for_node(f"{NAME}__import").user_failure_data.description
    assert api.requests == []
    instance.report_run_failed(executing)
    assert job.execute_in_process(instance=instance, partition_key="run-1").success and len(api.calls("import")) == 1


def test_a_folder_name_too_long_for_a_file_name_still_imports(setup, instance, api, s3) -> None:
    # the manifest of a 300-character folder cannot be named `<folder>.json` in a state folder (255-byte names)
    folder = "é" * 150 + "x" * 150
    s3.put_object(Bucket="drop", Key=f"incoming/{folder}/a.parquet", Body=b"a")
    instance.add_dynamic_partitions(PARTITIONS, [folder])
    job = setup["defs"].resolve_job_def(JOB)
    result = job.execute_in_process(instance=instance, partition_key=folder)
    assert result.success and result.get_asset_check_evaluations()[0].passed
    again = job.execute_in_process(instance=instance, partition_key=folder)
    assert again.asset_materializations_for_node(f"{NAME}__import")[0].metadata["resumed"].value is True
    assert len(api.calls("import")) == 1


def test_run_config_overrides_and_check_sees_a_changed_folder(setup, instance, api, s3) -> None:
    defs = setup["defs"]
    instance.add_dynamic_partitions(PARTITIONS, ["run-2"])
    run_config = {"ops": {f"{NAME}__import": {"config": {"package_id": "N:package:override", "asset_type": "other"}}}}
    result = defs.resolve_job_def(JOB).execute_in_process(instance=instance, partition_key="run-2", run_config=run_config)
    body = api.calls("import")[0].json()
    assert body["package_id"] == "N:package:override" and body["options"]["asset_type"] == "other"
    assert result.get_asset_check_evaluations()[0].passed

    s3.put_object(Bucket="drop", Key="incoming/run-2/late.parquet", Body=b"late")
    # the check alone, as a user re-runs it from the UI
    check_run = defs.resolve_job_def(JOB).execute_in_process(
        instance=instance, partition_key="run-2", op_selection=[f"{NAME}__import_import_complete"]
    )
    evaluation = check_run.get_asset_check_evaluations()[0]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "added: late.parquet" in evaluation.metadata["reason"].value


def test_run_config_properties_file_outside_the_folder_fails_without_a_call(setup, instance, api) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["run-2"])
    run_config = {"ops": {f"{NAME}__import": {"config": {"properties_file": "../run-1/properties.json"}}}}
    job = setup["defs"].resolve_job_def(JOB)
    result = job.execute_in_process(instance=instance, partition_key="run-2", run_config=run_config, raise_on_error=False)
    assert not result.success and api.requests == []
    assert "must be inside the input folder" in result.failure_data_for_node(f"{NAME}__import").user_failure_data.description


def test_failed_import_fails_the_run_with_the_reason(setup, instance, api) -> None:
    instance.add_dynamic_partitions(PARTITIONS, ["run-2"])
    api.fail("import", 400, body={"message": "package not in dataset"})
    result = setup["defs"].resolve_job_def(JOB).execute_in_process(instance=instance, partition_key="run-2", raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node(f"{NAME}__import")
    assert failure.user_failure_data is not None
    assert "HTTP 400" in failure.user_failure_data.description and "package not in dataset" in failure.user_failure_data.description
    assert failure.user_failure_data.metadata["manifest"].value == "umap-imports/imports/run-2.json"


def test_demo_seed_imports_a_folder(s3_server, tmp_path, instance, monkeypatch, write_config) -> None:
    from ingest_pipelines.pennsieve import demo

    ctx = DemoContext(endpoint_url=s3_server.endpoint_url, s3=s3_server.client("s3"), workdir=tmp_path)
    try:
        part = demo.seed(ctx)
        for key, value in ctx.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
        doc = {**part, "state": {"type": "filesystem", "path": str(tmp_path / "state")}}
        defs = build_definitions(load_config(write_config(doc)))
        name = "pennsieve_umap"
        instance.add_dynamic_partitions(f"{name}__imports", ["umap-0001"])
        run = defs.resolve_job_def(f"{name}__import_job").execute_in_process(instance=instance, partition_key="umap-0001")
        metadata = run.asset_materializations_for_node(f"{name}__import")[0].metadata
        assert metadata["files"].value == 2 and metadata["package_id"].value == demo.PACKAGE
        assert len(uploaded(ctx.s3)) == 2
    finally:
        for server in ctx.servers:
            server.stop()
