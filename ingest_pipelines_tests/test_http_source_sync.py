"""An `http` source synced through Dagster (sensor ticks on a real instance, the batch runs) into an `s3` mirror and
an `s3-records` destination on the moto server, against a JSON API on loopback that pages, throttles (429),
fails a download (500), updates and removes elements: the mirror equals the API and each element version is one
record; cleanUp deletes through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from ingest_pipelines.config import S3StoreConfig, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.plugins.adapters import escape_id
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.records import read_records
from ingest_pipelines.storage.s3 import S3Store
from ingest_pipelines.sync import ledger as ledger_tables
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines_tests.http_source_fixtures import ElementsAPI, http_source
from ingest_pipelines_tests.sync_fixtures import bucket_keys

IDS = ["alpha", "a/b", "../escape", "with space", "ü", "zeta", "42"]
SENSOR = "api_sync__sync_sensor"


@pytest.fixture
def api(http_server, monkeypatch) -> ElementsAPI:
    api = ElementsAPI(page_size=3).start(http_server)
    monkeypatch.setenv("ELEMENTS_API_TOKEN", api.token)
    for element_id in IDS:
        api.put(element_id, f"body of {element_id}".encode(), "text/markdown")
    return api


def sync_config(api: ElementsAPI, endpoint: str, tmp_path: Path, **workflow: Any) -> dict[str, Any]:
    s3 = {"endpoint": endpoint, "region": "us-east-1"}
    return {
        "sources": [http_source(api)],
        "destinations": [
            {"name": "mirror", "type": "s3", "bucket": "mirror", "prefix": "api/", "deletes": True, **s3},
            {"name": "records", "type": "s3-records", "bucket": "records", "prefix": "cdc/", "format": "json", "bufferSize": 4, **s3},
        ],
        "workflows": [
            {
                "name": "api-sync",
                "source": "api",
                "destinations": ["mirror", "records"],
                "settleDelay": "0s",
                "interval": "1ms",  # a listing pass at every tick (the default waits 5 min between passes)
                "batchSize": 3,
                "maxPagesPerTick": 2,
                **workflow,
            }
        ],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
    }


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, repository_def=defs.get_repository_def()
    ) as context:
        result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:  # as the daemon does before launching runs
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key, instance=instance, tags=request.tags, raise_on_error=False
    )


def pending(tmp_path: Path) -> list[Any]:
    return SyncLedger(f"sqlite:///{tmp_path / 'state' / 'sync-ledger.sqlite'}").pending_batches("api-sync")


def let_retry_delays_pass(tmp_path: Path) -> None:
    """Move every batch's last attempt an hour into the past, as if its retry delay had gone by."""
    table = ledger_tables.batches
    with SyncLedger(f"sqlite:///{tmp_path / 'state' / 'sync-ledger.sqlite'}").engine.begin() as conn:
        for column in (table.c.last_attempt_at, table.c.last_request_at):
            conn.execute(table.update().where(column.is_not(None)).values({column.name: column - 3600}))


def drive(
    defs: dg.Definitions, instance: dg.DagsterInstance, tmp_path: Path, cursor: str | None, max_ticks: int = 40
) -> tuple[str, list[Any]]:
    """Sensor ticks, each followed by the run it requests, until a change-capture pass has completed and no batch
    is pending (a failed batch's retry delay is let pass); the cursor and the runs."""
    start = SyncCursor.from_json(cursor).passes if cursor else 0
    results = []
    for _ in range(max_ticks):
        evaluation = tick(defs, instance, cursor)
        cursor = evaluation.cursor
        results += [execute(defs, instance, request) for request in evaluation.run_requests]
        state = SyncCursor.from_json(cursor)
        waiting = pending(tmp_path)
        if state.mode == "cdc" and state.passes > start and not waiting:
            return cursor, results
        if waiting and not evaluation.run_requests:
            let_retry_delays_pass(tmp_path)
    raise AssertionError(f"not done in {max_ticks} ticks")


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """The messages of a run's step failures (the error and the dg.Failure description)."""
    parts = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.event_specific_data
            parts.append(data.error.message if data.error else "")
            parts.append(data.user_failure_data.description if data.user_failure_data else "")
    return "\n".join(filter(None, parts))


def mirror(s3: Any) -> dict[str, bytes]:
    return {key[len("api/") :]: s3.get_object(Bucket="mirror", Key=key)["Body"].read() for key in bucket_keys(s3, "mirror", "api/")}


def records_by_key(endpoint: str, s3: Any) -> dict[str, list[tuple[str, bytes]]]:
    store = S3Store(S3StoreConfig(name="records", bucket="records", prefix="cdc/", endpoint=endpoint, region="us-east-1"))
    out: dict[str, list[tuple[str, bytes]]] = {}
    for key in sorted(bucket_keys(s3, "records", "cdc/")):  # batch ids sort in detection order
        for record in read_records(store, key[len("cdc/") :]):
            out.setdefault(record.key, []).append((record.operation, record.payload))
    return out


def expected_mirror(api: ElementsAPI) -> dict[str, bytes]:
    return {escape_id(element_id): body for element_id, body in api.snapshot().items()}


def checks_passed(results: list[Any]) -> bool:
    return all(e.passed for r in results for e in r.get_asset_check_evaluations())


def test_http_api_into_an_s3_mirror_and_records(api, s3, s3_server, tmp_path, write_config, instance) -> None:
    s3.create_bucket(Bucket="mirror")
    s3.create_bucket(Bucket="records")
    defs = build_definitions(load_config(write_config(sync_config(api, s3_server.endpoint_url, tmp_path))))
    api.throttle_lists = 1  # the very first list call: 429, Retry-After 1
    api.failing_downloads["zeta"] = 2  # two 500s, then the client's third attempt succeeds

    cursor, results = drive(defs, instance, tmp_path, None)
    assert results and all(r.success for r in results) and checks_passed(results)
    assert mirror(s3) == expected_mirror(api)
    head = s3.head_object(Bucket="mirror", Key="api/" + escape_id("a/b"))
    assert head["ContentType"] == "text/markdown"
    assert records_by_key(s3_server.endpoint_url, s3) == {escape_id(i): [("snapshot", f"body of {i}".encode())] for i in IDS}
    throttled = [r for r in api.server.requests if r.path == "/items"][0]
    assert throttled.headers["Authorization"] == f"Bearer {api.token}"
    # the mirror's copy: two 500s and the success; the records destination reads the payload once more
    assert len(api.requests("GET", api.download_path("zeta"))) == 4

    # an update, a removal and a new element; the new one's download fails once more than the client retries
    api.put("alpha", b"alpha, second version", "text/plain")
    api.remove("zeta")
    api.put("new/one", b"brand new")
    api.failing_downloads["new/one"] = 4  # retries: 3 -> the first apply run fails; the sensor's retry succeeds
    cursor, results = drive(defs, instance, tmp_path, cursor)
    failed = [r for r in results if not r.success]
    assert len(failed) == 1 and results[-1].success and checks_passed(results[-1:])
    assert "HTTP 500" in failure_text(failed[0]) and "(downloading element 'new/one')" in failure_text(failed[0])
    meta = [{k: v.value for k, v in e.materialization.metadata.items()} for r in results for e in r.get_asset_materialization_events()]
    assert sum(m["creates"] for m in meta) == 1 and sum(m["updates"] for m in meta) == 1 and sum(m["deletes"] for m in meta) == 1
    assert mirror(s3) == expected_mirror(api)
    records = records_by_key(s3_server.endpoint_url, s3)
    assert records["alpha"] == [("snapshot", b"body of alpha"), ("update", b"alpha, second version")]
    assert records["zeta"] == [("snapshot", b"body of zeta"), ("delete", b"")]
    assert records["new/one"] == [("create", b"brand new")]
    assert all(len(records[escape_id(i)]) == 1 for i in IDS if i not in ("alpha", "zeta"))

    # nothing changed: a pass finds nothing, no run is requested
    idle = tick(defs, instance, cursor)
    while SyncCursor.from_json(idle.cursor).passes == SyncCursor.from_json(cursor).passes:
        assert not idle.run_requests
        idle = tick(defs, instance, idle.cursor)
    assert not idle.run_requests and "pass" in str(idle.skip_message) and "complete" in str(idle.skip_message)


def test_an_element_updated_between_listing_and_download_is_recorded_once_per_version(
    api, s3, s3_server, tmp_path, write_config, instance
) -> None:
    s3.create_bucket(Bucket="mirror")
    s3.create_bucket(Bucket="records")
    defs = build_definitions(load_config(write_config(sync_config(api, s3_server.endpoint_url, tmp_path))))
    cursor, _ = drive(defs, instance, tmp_path, None)
    api.put("alpha", b"alpha v2")
    evaluation = tick(defs, instance, cursor)  # lists v2 and commits its batch...
    while not evaluation.run_requests:
        evaluation = tick(defs, instance, evaluation.cursor)
    api.put("alpha", b"alpha v3")  # ...which is v3 by the time its run downloads
    result = execute(defs, instance, evaluation.run_requests[0])
    assert result.success
    meta = {k: v.value for k, v in result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert meta["superseded"] == 2 and meta["copied"] == 0  # neither destination got v3 as v2
    drive(defs, instance, tmp_path, evaluation.cursor)
    assert mirror(s3) == expected_mirror(api)
    assert records_by_key(s3_server.endpoint_url, s3)["alpha"] == [("snapshot", b"body of alpha"), ("update", b"alpha v3")]


def test_a_snapshot_backfill_of_an_api_in_sync_downloads_little_and_adds_no_record(
    api, s3, s3_server, tmp_path, write_config, instance
) -> None:
    s3.create_bucket(Bucket="mirror")
    s3.create_bucket(Bucket="records")
    defs = build_definitions(load_config(write_config(sync_config(api, s3_server.endpoint_url, tmp_path))))
    drive(defs, instance, tmp_path, None)
    downloads = len(api.requests("GET", "/items/"))
    before = records_by_key(s3_server.endpoint_url, s3)
    s3.delete_object(Bucket="mirror", Key="api/alpha")  # one object lost in the mirror

    backfill = defs.resolve_job_def("api_sync__snapshot_job").execute_in_process(partition_key="all", instance=instance)
    assert backfill.success
    assert checks_passed([backfill])
    meta = {k: v.value for k, v in backfill.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert meta["copied"] == 1 and meta["already_present"] == len(IDS) - 1
    assert mirror(s3) == expected_mirror(api)
    assert records_by_key(s3_server.endpoint_url, s3) == before  # every version has its record already
    assert [r.path for r in api.requests("GET", "/items/")[downloads:]] == [api.download_path("alpha")]


def test_clean_up_deletes_through_the_api(api, s3, s3_server, tmp_path, write_config, instance) -> None:
    document = sync_config(api, s3_server.endpoint_url, tmp_path, cleanUp=True)
    document["destinations"] = [{"name": "folder", "type": "filesystem", "path": str(tmp_path / "folder")}]
    document["workflows"][0]["destinations"] = ["folder"]
    defs = build_definitions(load_config(write_config(document)))
    expected = expected_mirror(api)
    cursor, results = drive(defs, instance, tmp_path, None)
    assert all(r.success for r in results)
    folder = tmp_path / "folder"
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == expected
    assert api.snapshot() == {} and len(api.requests("DELETE")) == len(IDS)
    meta = [{k: v.value for k, v in e.materialization.metadata.items()} for r in results for e in r.get_asset_materialization_events()]
    assert sum(m["cleaned_up"] for m in meta) == len(IDS)
    cursor, results = drive(defs, instance, tmp_path, cursor)
    assert results == []  # elements removed by cleanUp are not deletes
