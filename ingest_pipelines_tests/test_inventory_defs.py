"""The inventory workflow through Dagster: definitions from a sample ingest.yaml, the sensor tick by
tick (cursor in, cursor out), and runs of the daily asset with its check on a real instance."""

from __future__ import annotations

import json
from collections.abc import Iterator

import dagster as dg
import pytest

from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.defs.inventory.assets import REPORT_TAG
from ingest_pipelines.demo import DemoContext
from ingest_pipelines.inventory.demo import seed
from ingest_pipelines.testing.inventory_report import rows_from_bucket
from ingest_pipelines_tests import inventory_fixtures
from ingest_pipelines_tests.inventory_fixtures import IMAGES, INVENTORY, InventoryScene

ASSET = dg.AssetKey(["faces_index", "indexed"])
SENSOR = "faces_index__inventory_sensor"
JOB = "faces_index__index_job"

# fixtures shared by the inventory test modules
gateway = inventory_fixtures.gateway
scene = inventory_fixtures.scene


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    """One Dagster instance for the module (about 2 s each on a busy machine): the tests launch no
    runs through the queue and assert only on their own runs' events."""
    with dg.instance_for_test() as inst:
        yield inst


def definitions(scene: InventoryScene, write_config, **workflow) -> dg.Definitions:
    return build_definitions(load_config(write_config(scene.config_document(**workflow))))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources, definitions=defs)
    return defs.resolve_sensor_def(SENSOR).evaluate_tick(context)


def run(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest | None = None, partition: str | None = None):
    job = defs.resolve_job_def(JOB)
    tags = {k: v for k, v in (request.tags if request else {}).items() if not k.startswith("dagster/")}
    return job.execute_in_process(
        instance=instance, partition_key=request.partition_key if request else partition, tags=tags, raise_on_error=False
    )


def materialization(result) -> dict:
    (event,) = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    return {k: getattr(v, "value", getattr(v, "data", v)) for k, v in event.event_specific_data.materialization.metadata.items()}


def check(result):
    (event,) = [e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return event.event_specific_data


def test_sample_config_builds_asset_check_sensor_and_job(scene: InventoryScene, write_config) -> None:
    defs = definitions(scene, write_config, sensor="running", interval="45s")
    graph = defs.resolve_asset_graph()
    assert ASSET in graph.get_all_asset_keys()
    assert dg.AssetCheckKey(ASSET, "no_failures") in graph.asset_check_keys
    asset = defs.resolve_assets_def(ASSET)
    assert asset.partitions_def == dg.DailyPartitionsDefinition("2024-01-01", end_offset=1, timezone="UTC")
    assert asset.op.pool == "gateway"
    assert asset.required_resource_keys >= {"source_inventory", "ingest_state"}
    sensor = defs.resolve_sensor_def(SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 44
    job = defs.resolve_job_def(JOB)
    assert job.tags["ingest/serial"] == "faces_index"
    assert sensor.job_name == JOB


def test_workflow_takes_no_destinations_and_needs_a_gateway_url(scene: InventoryScene, write_config) -> None:
    document = scene.config_document()
    document["workflows"][0]["gateway"] = {"url": "ftp://x"}
    with pytest.raises(ConfigError, match="faces-index.*gateway.url.*http"):
        load_config(write_config(document))
    document = scene.config_document(destinations=["x"])
    document["destinations"] = [{"name": "x", "type": "filesystem", "path": "/tmp/x"}]
    with pytest.raises(ConfigError, match="takes at most 0"):
        load_config(write_config(document))


def test_sensor_tick_by_tick(scene: InventoryScene, write_config, instance) -> None:
    defs = definitions(scene, write_config)
    first = tick(defs, instance, None)
    assert first.run_requests == [] and json.loads(first.cursor) == {"marks": {}, "seen": {}, "resume_after": None, "requests": []}

    # a manifest under reports/ (Batch Operations completion reports) and an incomplete report: no run
    scene.put_image("a.png", {"UserId": "fred"})
    scene.s3.put_object(Bucket=INVENTORY, Key="inv/reports/daily/2024-05-01T01-00Z/manifest.json", Body=b"{}")
    scene.s3.put_object(Bucket=INVENTORY, Key="inv/reports/daily/2024-05-01T01-00Z/manifest.checksum", Body=b"0" * 32)
    scene.report("2024-05-01T01-00Z", checksum=False)
    second = tick(defs, instance, first.cursor)
    assert second.run_requests == []

    ref = scene.report("2024-05-01T01-00Z")
    checksum = scene.s3.get_object(Bucket=INVENTORY, Key=ref.checksum_key)["Body"].read().decode().strip()
    third = tick(defs, instance, second.cursor)
    (request,) = third.run_requests
    assert request.partition_key == "2024-05-01"
    assert request.run_key == f"inv/images/daily/2024-05-01T01-00Z/manifest.json:{checksum}"
    assert request.tags[REPORT_TAG] == "inv/images/daily/2024-05-01T01-00Z/manifest.json"
    assert json.loads(third.cursor)["marks"] == {"images/daily": "2024-05-01T01-00Z"}

    assert tick(defs, instance, third.cursor).run_requests == []
    scene.report("2024-05-02T01-00Z")
    scene.report("2024-05-03T01-00Z")
    fifth = tick(defs, instance, third.cursor)
    assert [r.partition_key for r in fifth.run_requests] == ["2024-05-02", "2024-05-03"]

    # a report delivered after a newer one of its series is requested once
    scene.report("2024-05-02T13-00Z")
    sixth = tick(defs, instance, fifth.cursor)
    assert [r.tags[REPORT_TAG] for r in sixth.run_requests] == ["inv/images/daily/2024-05-02T13-00Z/manifest.json"]
    assert tick(defs, instance, sixth.cursor).run_requests == []

    # a report dated after today has no partition yet: it waits instead of failing every tick
    scene.report("2099-01-01T01-00Z", config_id="a-future")
    scene.report("2024-05-04T01-00Z", config_id="b-daily")
    seventh = tick(defs, instance, sixth.cursor)
    assert [r.tags[REPORT_TAG] for r in seventh.run_requests] == ["inv/images/b-daily/2024-05-04T01-00Z/manifest.json"]
    assert "images/a-future" not in json.loads(seventh.cursor)["marks"]


def test_end_to_end_sensor_run_metadata_and_check(scene: InventoryScene, write_config, instance) -> None:
    defs = definitions(scene, write_config)
    scene.put_image("a.PNG", {"UserId": "a", "team": "blue"})
    scene.put_image("b.jpg", {"UserId": "b"})
    scene.put_image("d.gif", {"UserId": "d"})
    scene.put_image("dead.jpeg", {"UserId": "dead"})
    scene.gateway.always(500, user_id="dead")
    scene.report("2024-05-01T01-00Z")
    (request,) = tick(defs, instance, None).run_requests
    result = run(defs, instance, request)
    assert result.success
    metadata = materialization(result)
    assert metadata["rows"] == 4 and metadata["candidates"] == 3 and metadata["indexed"] == 2 and metadata["failed"] == 1
    assert metadata["dead_lettered"] == ["dead.jpeg"]
    assert metadata["reports"] == ["s3://inventory/inv/images/daily/2024-05-01T01-00Z/manifest.json"]
    evaluation = check(result)
    assert not evaluation.passed and evaluation.partition == "2024-05-01"
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert scene.tags("a.PNG") == {"UserId": "a", "team": "blue", "Indexed": "True"}
    assert "Indexed" not in scene.tags("dead.jpeg")
    event = instance.get_latest_materialization_event(ASSET)
    assert event is not None and event.dagster_event.partition == "2024-05-01"

    # the gateway recovers; a backfill of the date (no sensor tag) retries the dead-lettered object only
    scene.gateway.always(200, user_id="dead")
    calls_before = len(scene.gateway.calls)
    backfill = run(defs, instance, partition="2024-05-01")
    assert backfill.success
    metadata = materialization(backfill)
    assert metadata["indexed"] == 1 and metadata["skipped_non_qualified"] == 2 and metadata["failed"] == 0
    assert len(scene.gateway.calls) == calls_before + 1
    assert check(backfill).passed


def test_second_day_run_diffs_against_the_first(scene: InventoryScene, write_config, instance) -> None:
    defs = definitions(scene, write_config)
    for i in range(5):
        scene.put_image(f"{i}.png", {"UserId": f"u{i}"})
    scene.report("2024-05-01T01-00Z")
    assert run(defs, instance, partition="2024-05-01").success
    scene.put_image("new-1.jpg", {"UserId": "n1"})
    scene.put_image("new-2.jpg", {"UserId": "n2"})
    scene.report("2024-05-02T01-00Z")
    result = run(defs, instance, partition="2024-05-02")
    metadata = materialization(result)
    assert (metadata["new"], metadata["unchanged"], metadata["candidates"], metadata["indexed"]) == (2, 5, 2, 2)
    assert metadata["previous_reports"] == ["2024-05-01T01-00Z"]
    assert check(result).passed


def test_dates_without_a_report_succeed_with_report_none_and_a_warning(scene: InventoryScene, write_config, instance) -> None:
    # S3 Inventory skips days: a range backfill after an outage must end green where nothing is missing
    defs = definitions(scene, write_config)
    scene.put_image("a.png", {"UserId": "a"})
    scene.report("2024-06-02T01-00Z")
    results = {date: run(defs, instance, partition=date) for date in ("2024-06-01", "2024-06-02", "2024-06-03")}
    assert all(result.success for result in results.values())
    for date in ("2024-06-01", "2024-06-03"):
        metadata = materialization(results[date])
        assert metadata["report"] == "none" and metadata["reports"] == [] and metadata["rows"] == 0 and metadata["failed"] == 0
        evaluation = check(results[date])
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN and evaluation.partition == date
        assert f"no S3 Inventory report delivered on {date} under s3://inventory/inv" in evaluation.metadata["reason"].value
    assert materialization(results["2024-06-02"])["indexed"] == 1 and check(results["2024-06-02"]).passed
    # every date of the range is materialized; none is left failed
    materialized = instance.get_materialized_partitions(ASSET)
    assert {"2024-06-01", "2024-06-02", "2024-06-03"} <= set(materialized)
    assert scene.gateway.calls and len(scene.gateway.calls) == 1


def test_corrupt_manifest_fails_the_run(scene: InventoryScene, write_config, instance) -> None:
    defs = definitions(scene, write_config)
    scene.put_image("a.png", {"UserId": "a"})
    ref = scene.report("2024-05-01T01-00Z")
    scene.s3.put_object(Bucket=INVENTORY, Key=ref.checksum_key, Body=b"f" * 32)
    result = run(defs, instance, partition="2024-05-01")
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "manifest.json: MD5 mismatch" in str(failure.event_specific_data.error)
    assert scene.gateway.calls == []


def test_demo_seed_loads_and_its_report_runs(s3, s3_server, write_config, instance, tmp_path) -> None:
    ctx = DemoContext(endpoint_url=s3_server.endpoint_url, s3=s3, workdir=tmp_path)
    try:
        document = seed(ctx)
        document["state"] = {"type": "filesystem", "path": str(tmp_path / "state")}
        defs = build_definitions(load_config(write_config(document)))
        context = dg.build_sensor_context(instance=instance, resources=defs.resources, definitions=defs)
        (request,) = defs.resolve_sensor_def("faces_index__inventory_sensor").evaluate_tick(context).run_requests
        tags = {k: v for k, v in request.tags.items() if not k.startswith("dagster/")}
        result = defs.resolve_job_def("faces_index__index_job").execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=tags
        )
        metadata = materialization(result)
        assert (metadata["candidates"], metadata["indexed"], metadata["skipped_invalid"], metadata["skipped_non_qualified"]) == (6, 3, 1, 2)
        assert check(result).passed
        (gateway,) = ctx.servers
        assert {call["UserId"] for call in gateway.registrations} == {"alice", "bob", "grace"}
        assert [call["Properties"] for call in gateway.calls_for("alice")] == [{"fname": "Alice", "lname": "Liddell"}]
    finally:
        for server in ctx.servers:
            server.stop()


def test_date_check_covers_every_report_of_the_date(scene: InventoryScene, write_config, instance) -> None:
    # two reports on one date (two source buckets or configs): the second run's check used to hide the first's failures
    defs = definitions(scene, write_config)
    scene.put_image("dead.png", {"UserId": "dead"})
    scene.put_image("fine.png", {"UserId": "fine"})
    scene.gateway.always(500, user_id="dead")
    rows = {row["key"]: row for row in rows_from_bucket(scene.s3, IMAGES)}
    scene.report("2024-05-01T01-00Z", rows=[rows["dead.png"]], config_id="a-daily")
    scene.report("2024-05-01T02-00Z", rows=[rows["fine.png"]], config_id="b-daily")
    first, second = sorted(tick(defs, instance, None).run_requests, key=lambda r: r.tags[REPORT_TAG])
    assert not check(run(defs, instance, first)).passed
    evaluation = check(run(defs, instance, second))
    assert not evaluation.passed
    assert evaluation.metadata["dead_lettered"].data == ["dead.png"]
    # the gateway recovers and the failed report is re-run: the date is clean
    scene.gateway.always(200, user_id="dead")
    assert check(run(defs, instance, first)).passed
