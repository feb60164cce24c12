"""Sync benchmark: 5,000 1 KiB objects S3 -> S3 end to end through Dagster, against `aws s3 sync`,
`rclone copy --transfers 16` and a 16-thread boto3 list+copy loop on the same moto server; then one
CDC pass over a large bucket with 10 changes (seconds and S3 requests per tick)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import peak_rss_mib, print_ratios, timed
from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS

OBJECTS = int(os.environ.get("BENCH_SYNC_OBJECTS", "5000"))
CDC_KEYS = int(os.environ.get("BENCH_SYNC_CDC_KEYS", "100000"))
BODY = b"x" * 1024


def _env() -> dict[str, str]:
    env = {**os.environ, **TEST_CREDENTIALS}
    env.pop("AWS_CA_BUNDLE", None)
    return env


def _fill(s3: Any, bucket: str, count: int, prefix: str = "obj/", body: bytes = BODY) -> None:
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{prefix}{i:07d}", Body=body), range(count)))


def _count(s3: Any, bucket: str) -> int:
    return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))


def _drop(s3: Any, bucket: str) -> None:
    """Remove a measured destination: moto slows down as it holds more objects (about 20% from 2,000
    to 14,000 copies in one server), so each measurement must find the server as the first one did."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


def bench_aws(server: MotoServer, s3: Any) -> float | None:
    aws = Path(sys.executable).with_name("aws")
    if not aws.exists():
        print("  aws CLI not installed: baseline skipped")
        return None
    s3.create_bucket(Bucket="dst-aws")
    cmd = [str(aws), "s3", "sync", "s3://src", "s3://dst-aws", "--endpoint-url", server.endpoint_url, "--only-show-errors"]
    with timed() as t:
        subprocess.run(cmd, env=_env(), check=True)
    assert _count(s3, "dst-aws") == OBJECTS
    _drop(s3, "dst-aws")
    return OBJECTS / t["seconds"]


def bench_rclone(server: MotoServer, s3: Any) -> float | None:
    rclone = shutil.which("rclone")
    if rclone is None:
        print("  rclone not installed (apt-get install -y rclone): baseline skipped")
        return None
    s3.create_bucket(Bucket="dst-rclone")
    env = _env()
    env.update(
        {
            "RCLONE_CONFIG_MOTO_TYPE": "s3",
            "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
            "RCLONE_CONFIG_MOTO_ENDPOINT": server.endpoint_url,
            "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
            "RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE": "true",
        }
    )
    with timed() as t:
        subprocess.run([rclone, "copy", "moto:src", "moto:dst-rclone", "--transfers", "16", "-q"], env=env, check=True)
    assert _count(s3, "dst-rclone") == OBJECTS
    _drop(s3, "dst-rclone")
    return OBJECTS / t["seconds"]


def bench_boto3(server: MotoServer) -> float:
    s3 = server.client("s3")
    s3.create_bucket(Bucket="dst-boto3")
    with timed() as t:
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="src") for o in page.get("Contents", [])]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: s3.copy_object(CopySource={"Bucket": "src", "Key": k}, Bucket="dst-boto3", Key=k), keys))
    assert _count(s3, "dst-boto3") == OBJECTS
    _drop(s3, "dst-boto3")
    return OBJECTS / t["seconds"]


def bench_ours(server: MotoServer, s3: Any, work: Path, batch_size: int) -> tuple[float, dict[str, Any]]:
    """First sensor tick to last object in the destination: sensor evaluations and one run per batch
    (execute_in_process on a persistent SQLite instance), as the daemon would launch them."""
    import dagster as dg

    from ingest_pipelines.config import load_config
    from ingest_pipelines.defs import build_definitions

    bucket = f"dst-ours-{batch_size}"
    s3.create_bucket(Bucket=bucket)
    store = {"type": "s3", "endpoint": server.endpoint_url, "region": "us-east-1"}
    doc = {
        "sources": [{"name": "src", "bucket": "src", **store}],
        "destinations": [{"name": "dst", "bucket": bucket, **store}],
        "workflows": [
            {"name": "bench", "source": "src", "destinations": ["dst"], "batchSize": batch_size, "threads": 16, "settleDelay": "0s"}
        ],
        "state": {"type": "filesystem", "path": str(work / f"state-{batch_size}")},
    }
    config_path = work / f"ingest-{batch_size}.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    home = work / f"dagster_home-{batch_size}"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    defs = build_definitions(load_config(config_path))
    sensor = defs.resolve_sensor_def("bench__sync_sensor")
    runs = 0
    with dg.DagsterInstance.get() as instance, timed() as t:
        cursor = None
        while True:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=defs.resources, repository_def=defs.get_repository_def()
            ) as context:
                data = sensor.evaluate_tick(context)
            cursor = data.cursor
            for request in data.run_requests or []:
                job = defs.resolve_job_def(request.job_name)
                result = job.execute_in_process(
                    run_config=request.run_config, partition_key=request.partition_key, instance=instance, tags=request.tags
                )
                assert result.success
                runs += 1
            if _count(s3, bucket) >= OBJECTS:
                break
    _drop(s3, bucket)
    return OBJECTS / t["seconds"], {"runs": runs, "seconds": round(t["seconds"], 2)}


def bench_cdc(server: MotoServer, work: Path) -> dict[str, Any]:
    """A large bucket, snapshotted; then 10 changes; one full CDC pass, tick by tick."""
    from ingest_pipelines.config import S3StoreConfig
    from ingest_pipelines.storage import open_store
    from ingest_pipelines.sync.config import SyncWorkflow
    from ingest_pipelines.sync.ledger import SyncLedger
    from ingest_pipelines.sync.tick import run_tick

    s3 = server.client("s3")
    with timed() as fill:
        _fill(s3, "big", CDC_KEYS, body=b"")
    print(f"  filled {CDC_KEYS} keys in {fill['seconds']:.0f}s")
    source = open_store(S3StoreConfig(name="big", bucket="big", endpoint=server.endpoint_url))
    requests = {"n": 0}
    source.client.meta.events.register("before-call.s3", lambda **_: requests.__setitem__("n", requests["n"] + 1))
    workflow = SyncWorkflow(name="cdc", source="big", destinations=["x"], batchSize=1000, settleDelay=0, interval="1ms")
    ledger = SyncLedger(f"sqlite:///{work / 'cdc-ledger.sqlite'}")
    with timed() as snap:
        while True:
            outcome = run_tick(workflow, source, ledger)
            if outcome.cursor.mode == "cdc":
                break
    snapshot_requests = requests["n"]
    for i in range(5):
        s3.put_object(Bucket="big", Key=f"obj/{i * 7919 % CDC_KEYS:07d}", Body=b"changed")
        s3.put_object(Bucket="big", Key=f"new/{i}", Body=b"new")
    requests["n"] = 0
    ticks = []
    changes = 0
    while True:
        before = requests["n"]
        with timed() as t:
            outcome = run_tick(workflow, source, ledger)
        changes += sum(len(b.changes) for b in outcome.batches)
        ticks.append({"seconds": round(t["seconds"], 2), "s3_requests": requests["n"] - before, "pages": outcome.pages})
        if outcome.cursor.after == "":
            break
    result = {
        "keys": CDC_KEYS,
        "snapshot_seconds": round(snap["seconds"], 1),
        "snapshot_s3_requests": snapshot_requests,
        "cdc_pass_ticks": ticks,
        "cdc_pass_seconds": round(sum(t["seconds"] for t in ticks), 2),
        "cdc_pass_s3_requests": sum(t["s3_requests"] for t in ticks),
        "changes_found": changes,
    }
    print(
        f"  CDC pass over {CDC_KEYS} keys with 10 changes: {result['cdc_pass_seconds']}s, "
        f"{result['cdc_pass_s3_requests']} S3 requests in {len(ticks)} tick(s) (max {max(t['seconds'] for t in ticks)}s per tick); "
        f"found {changes} change(s)"
    )
    assert changes == 10, f"expected 10 changes, found {changes}"
    return result


def main(argv: list[str]) -> dict[str, Any]:
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)
    results: dict[str, Any] = {"objects": OBJECTS}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as server:
        work = Path(tmp)
        s3 = server.client("s3")
        with timed() as fill:
            _fill(s3, "src", OBJECTS)
        print(f"  source: {OBJECTS} objects of 1 KiB ({fill['seconds']:.1f}s to create)")
        baselines = []
        for name, fn in (
            ("aws s3 sync", lambda: bench_aws(server, s3)),
            ("rclone copy --transfers 16", lambda: bench_rclone(server, s3)),
            ("boto3 16 threads list+copy", lambda: bench_boto3(server)),
        ):
            rate = fn()
            if rate is not None:
                baselines.append((name, rate))
                results[name] = round(rate, 1)
        rate, detail = bench_ours(server, s3, work, batch_size=1000)
        results["ours_batch_1000"] = {"objects_per_second": round(rate, 1), **detail}
        results["ratios"] = print_ratios(
            f"sync {OBJECTS} x 1 KiB S3->S3, first tick to last object (batchSize 1000, 16 threads)",
            "objects/s",
            ("ours (Dagster)", rate),
            baselines,
        )
        big_rate, big_detail = bench_ours(server, s3, work, batch_size=OBJECTS)
        results[f"ours_batch_{OBJECTS}"] = {"objects_per_second": round(big_rate, 1), **big_detail}
        results["ratios_one_batch"] = print_ratios(
            f"same, batchSize {OBJECTS} (one run)", "objects/s", ("ours (Dagster, one batch)", big_rate), baselines
        )
        results["peak_rss_mib"] = round(peak_rss_mib(), 1)
        if CDC_KEYS:
            results["cdc"] = bench_cdc(server, work)
    return results


if __name__ == "__main__":
    print(main(sys.argv[1:]))
