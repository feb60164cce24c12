"""Production layout on this machine: `dagster code-server` (the Dockerfile's command), `dagster-webserver`
and `dagster-daemon run` as separate processes on a fresh PostgreSQL database. A sync workflow's sensor
ticks, runs are queued and launched, the daemon is killed and restarted mid-way, nothing is lost or
doubled; a run is launched through the webserver's GraphQL API too."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.deploy_fixtures import (
    BIN,
    ProcessGroup,
    child_env,
    fresh_database,
    http_ok,
    instance_home,
    pg_query,
    pg_url,
    wait_until,
)
from ingest_pipelines_tests.test_deploy_instance import dockerfile_command

WORKFLOW = "mp-sync"
DNAME = "mp_sync"
LOCATION = "ingest_pipelines"
ACTIVE = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED}


def objects(s3: Any, bucket: str) -> dict[str, str]:
    """key -> ETag of every object in a bucket."""
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = item["ETag"].strip('"')
    return out


def code_server_command(port: int) -> list[str]:
    """The image's CMD with a loopback host and a free port."""
    command = dockerfile_command()
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = str(port)
    assert command[0] == "dagster"
    return [str(BIN / "dagster"), *command[1:]]


def ingest_document(endpoint: str, tmp_path: Path, ledger: str) -> dict[str, Any]:
    store = {
        "type": "s3",
        "endpoint": endpoint,
        "region": "us-east-1",
        "accessKeyID": "$AWS_ACCESS_KEY_ID",
        "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
    }
    return {
        "sources": [{"name": "src", "bucket": "mp-src", **store}],
        "destinations": [{"name": "dst", "bucket": "mp-dst", **store}],
        "workflows": [
            {
                "name": WORKFLOW,
                "kind": "sync",
                "source": "src",
                "destinations": ["dst"],
                "batchSize": 13,
                "interval": "2s",
                "settleDelay": "0s",
                "sensor": "running",
                # the ledger in the same PostgreSQL database: every process sees one truth
                "ledger": ledger,
            }
        ],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
    }


def runs_of(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(tags={"ingest/serial": DNAME})))


def test_webserver_daemon_and_code_server_on_postgres_survive_a_daemon_restart(tmp_path: Path, s3, s3_server, monkeypatch) -> None:
    s3.create_bucket(Bucket="mp-src")
    s3.create_bucket(Bucket="mp-dst")
    for i in range(25):
        s3.put_object(Bucket="mp-src", Key=f"wave1/{i:03d}.txt", Body=f"first {i}".encode())

    procs = ProcessGroup(tmp_path / "logs")
    with fresh_database() as pg_env:
        for key, value in pg_env.items():
            monkeypatch.setenv(key, value)
        home = instance_home(tmp_path / "dagster_home", dequeue_seconds=1)
        config_path = tmp_path / "ingest.yaml"
        config_path.write_text(yaml.safe_dump(ingest_document(s3_server.endpoint_url, tmp_path, pg_url(pg_env))))
        grpc_port, web_port = free_port(), free_port()
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump({"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": grpc_port, "location_name": LOCATION}}]})
        )
        env = child_env(DAGSTER_HOME=str(home), INGEST_CONFIG=str(config_path), **pg_env)
        daemon_argv = [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]
        try:
            procs.start("code-server", code_server_command(grpc_port), env, cwd=tmp_path)
            procs.start(
                "webserver",
                [str(BIN / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1", "-p", str(web_port)],
                env,
                cwd=tmp_path,
            )
            procs.start("daemon", daemon_argv, env, cwd=tmp_path)
            wait_until(lambda: http_ok(f"http://127.0.0.1:{web_port}/server_info"), 120, "the webserver", details=procs.logs)

            with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
                # the sensor ticks by itself (sensor: running) and requests 2 snapshot batches; the run
                # queue launches them one at a time (ingest/serial); kill the daemon after the first
                wait_until(
                    lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in runs_of(instance)),
                    240,
                    "a first sync run to succeed",
                    details=procs.logs,
                )
                procs.kill("daemon", signal.SIGKILL)
                assert not procs.alive("daemon")
                for i in range(15):
                    s3.put_object(Bucket="mp-src", Key=f"wave2/{i:03d}.txt", Body=f"second {i}".encode())
                for i in range(3):
                    s3.put_object(Bucket="mp-src", Key=f"wave1/{i:03d}.txt", Body=f"updated {i}".encode())
                procs.start("daemon", daemon_argv, env, cwd=tmp_path)

                def settled() -> bool:
                    runs = runs_of(instance)
                    return objects(s3, "mp-dst") == objects(s3, "mp-src") and not any(r.status in ACTIVE for r in runs)

                wait_until(settled, 240, "the destination to equal the source with no run left", interval=1.0, details=procs.logs)
                sensor_runs = runs_of(instance)
                # the last run of the workflow succeeded: every batch is applied (a run the kill hit may have
                # failed; reconciliation requested the next one)
                assert sensor_runs[0].status == dg.DagsterRunStatus.SUCCESS, procs.logs()
                jobs = {r.job_name for r in sensor_runs}
                assert jobs == {f"{DNAME}__apply_job"}, jobs
                assert all(r.tags.get("dagster/sensor_name") == f"{DNAME}__sync_sensor" for r in sensor_runs)
                # each run went through the queue (QueuedRunCoordinator); a run applies every pending batch,
                # so there are far fewer runs than batches
                for run in sensor_runs:
                    assert instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records, run.run_id
                assert not SyncLedger(pg_url(pg_env)).pending_batches(WORKFLOW)
                assert procs.starts["daemon"] == 2

                # nothing lost or doubled: the ledger holds every current (key, version) of the source,
                # each exactly once (an update that overtook its snapshot batch is applied once, as
                # the newer version; the older copy is refused by CopySourceIfMatch and not recorded)
                rows = [
                    (bytes(key).decode(), version)
                    for key, version in pg_query(
                        pg_env, "SELECT key, version FROM sync_applied WHERE workflow = %s AND destination = 'dst'", (WORKFLOW,)
                    )
                ]
                assert len(rows) == len(set(rows)), sorted(rows)
                assert set(objects(s3, "mp-src").items()) <= set(rows)
                assert 40 <= len(rows) <= 43

                # a run launched through the webserver's GraphQL API: the snapshot shard re-listed
                client = DagsterGraphQLClient("127.0.0.1", port_number=web_port, timeout=60)
                run_id = client.submit_job_execution(
                    f"{DNAME}__snapshot_job",
                    repository_location_name=LOCATION,
                    repository_name="__repository__",
                    tags={"dagster/partition": "all", "launched_by": "graphql-test"},
                )

                def graphql_status() -> dg.DagsterRunStatus | None:
                    try:
                        status = client.get_run_status(run_id)
                    except DagsterGraphQLClientError:
                        return None
                    return status if status not in ACTIVE else None

                status = wait_until(graphql_status, 180, f"GraphQL run {run_id} to finish", interval=1.0, details=procs.logs)
                assert status == dg.DagsterRunStatus.SUCCESS, procs.logs()
                run = instance.get_run_by_id(run_id)
                assert run is not None and run.tags["launched_by"] == "graphql-test" and run.tags["ingest/serial"] == DNAME
                assert instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
                (event,) = [
                    r.event_log_entry.dagster_event
                    for r in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
                ]
                meta = {k: v.value for k, v in event.event_specific_data.materialization.metadata.items()}
                assert event.event_specific_data.materialization.partition == "all"
                assert meta["copied"] == 0, json.dumps(meta, default=str)
                assert objects(s3, "mp-dst") == objects(s3, "mp-src")
        finally:
            procs.stop_all()
