"""`executor: {type: celery, ...}`: a real `dagster-celery` worker process on Redis runs the ops of a
sync batch run and of a two-op probe job, with op outputs in S3 (the moto server) between processes."""

from __future__ import annotations

import json
import pickle
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, redis_db_url, wait_until

WORKFLOW = "celery-sync"
DNAME = "celery_sync"


def objects(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = item["ETag"].strip('"')
    return out


def ingest_document(endpoint: str, tmp_path: Path) -> dict[str, Any]:
    store = {
        "type": "s3",
        "endpoint": endpoint,
        "region": "us-east-1",
        "accessKeyID": "$AWS_ACCESS_KEY_ID",
        "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
    }
    return {
        "sources": [{"name": "src", "bucket": "cel-src", **store}],
        "destinations": [{"name": "dst", "bucket": "cel-dst", **store}],
        "workflows": [
            {
                "name": WORKFLOW,
                "kind": "sync",
                "source": "src",
                "destinations": ["dst"],
                "batchSize": 50,
                "settleDelay": "0s",
                "ledger": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
            }
        ],
        # op outputs go to s3://cel-state/state/dagster-io/ (the state store), readable by every worker
        "state": {"name": "state", "bucket": "cel-state", "prefix": "state/", **store},
        # the broker as $VAR: Dagster gets {env: INGEST_CELERY_BROKER}, the UI never shows the URL
        "executor": {"type": "celery", "broker": "$INGEST_CELERY_BROKER", "backend": "$INGEST_CELERY_BROKER"},
    }


def execute_job(job: str, env: dict[str, str], cwd: Path, module: str, run_config: dict[str, Any], tags: dict[str, str]) -> None:
    """`dagster job execute` in its own process: the run's process submits each op to the broker."""
    config_file = cwd / f"{job}.run_config.yaml"
    config_file.write_text(yaml.safe_dump(run_config))
    argv = [sys.executable, "-m", "dagster", "job", "execute", "-m", module, "-j", job, "-c", str(config_file), "--tags", json.dumps(tags)]
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def engine_events(instance: dg.DagsterInstance, run_id: str) -> list[dg.DagsterEvent]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]


def celery_workers_of(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that executed it (from the executor's engine events)."""
    out = {}
    for event in engine_events(instance, run_id):
        meta = event.event_specific_data.metadata if event.event_specific_data else {}
        if "Celery worker" in meta and event.step_key:
            out[event.step_key] = meta["Celery worker"].value
    return out


def latest_run(instance: dg.DagsterInstance, job: str) -> dg.DagsterRun:
    (run,) = instance.get_runs(filters=dg.RunsFilter(job_name=job), limit=1)
    return run


def test_sync_batch_and_op_outputs_cross_a_real_celery_worker(tmp_path: Path, s3, s3_server, monkeypatch) -> None:
    broker = redis_db_url()
    for bucket in ("cel-src", "cel-dst", "cel-state"):
        s3.create_bucket(Bucket=bucket)
    for i in range(12):
        s3.put_object(Bucket="cel-src", Key=f"in/{i:02d}.bin", Body=bytes([i]) * 1000)

    config_path = tmp_path / "ingest.yaml"
    config_path.write_text(yaml.safe_dump(ingest_document(s3_server.endpoint_url, tmp_path)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # SQLite: the worker and the run share this host
    celery_yaml = tmp_path / "celery.yaml"
    celery_yaml.write_text(
        yaml.safe_dump({"execution": {"config": {"broker": {"env": "INGEST_CELERY_BROKER"}, "backend": {"env": "INGEST_CELERY_BROKER"}}}})
    )
    env = child_env(DAGSTER_HOME=str(home), INGEST_CONFIG=str(config_path), INGEST_CELERY_BROKER=broker)
    monkeypatch.setenv("INGEST_CELERY_BROKER", broker)
    worker_name = f"ingest-test-{secrets.token_hex(3)}"

    procs = ProcessGroup(tmp_path / "logs")
    try:
        procs.start(
            "celery-worker",
            [
                str(BIN / "dagster-celery"),
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(celery_yaml),
                "-n",
                worker_name,
                "--",
                "--concurrency=2",
            ],
            env,
            cwd=tmp_path,
        )
        wait_until(lambda: "ready." in procs.log("celery-worker", 20000), 90, "the Celery worker to be ready", details=procs.logs)

        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
            # the sensor's tick, in-process, writes the batch; the batch's run goes through Celery
            defs = build_definitions(load_config(config_path))
            sensor = defs.resolve_sensor_def(f"{DNAME}__sync_sensor")
            with dg.build_sensor_context(instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()) as context:
                (request,) = sensor.evaluate_tick(context).run_requests
            job = f"{DNAME}__apply_job"
            assert request.job_name == job
            execute_job(job, env, tmp_path, "ingest_pipelines.definitions", request.run_config, dict(request.tags))
            run = latest_run(instance, job)
            assert run.status == dg.DagsterRunStatus.SUCCESS
            step = f"{DNAME}__apply"
            assert celery_workers_of(instance, run.run_id) == {step: f"{worker_name}@{socket.gethostname()}"}, procs.logs()
            (materialization,) = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
            meta = materialization.event_log_entry.dagster_event.event_specific_data.materialization.metadata
            assert meta["copied"].value == 12 and meta["batch_id"].value == request.tags["ingest/first_batch"]
            assert objects(s3, "cel-dst") == objects(s3, "cel-src")

            # two ops, one output: the second op loads the first's value from S3 on a worker
            execute_job("deploy_probe_job", env, tmp_path, "ingest_pipelines_tests.deploy_celery_defs", {}, {})
            probe = latest_run(instance, "deploy_probe_job")
            assert probe.status == dg.DagsterRunStatus.SUCCESS
            workers = celery_workers_of(instance, probe.run_id)
            assert set(workers) == {"deploy_probe__listing", "deploy_probe__summary"}
            stored = objects(s3, "cel-state", "state/dagster-io/")
            assert set(stored) == {"state/dagster-io/deploy_probe/listing", "state/dagster-io/deploy_probe/summary"}
            summary = pickle.loads(s3.get_object(Bucket="cel-state", Key="state/dagster-io/deploy_probe/summary")["Body"].read())
            listing = pickle.loads(s3.get_object(Bucket="cel-state", Key="state/dagster-io/deploy_probe/listing")["Body"].read())
            assert summary["count"] == 3 and summary["upstream_pid"] == listing["pid"]
            # the ops ran in worker processes, not in the run's own process
            run_pids = {e.pid for e in engine_events(instance, probe.run_id) if e.pid is not None and e.step_key is None}
            assert listing["pid"] not in run_pids and summary["pid"] not in run_pids
    finally:
        procs.stop_all()
