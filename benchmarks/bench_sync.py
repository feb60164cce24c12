"""Sync benchmark: 1 KiB objects S3 -> S3 on one moto server (a subprocess), ours beside `aws s3 sync`,
`rclone copy --transfers 16` (when installed) and a 16-thread boto3 list+copy loop, all measured in this run.

- in-process: sensor ticks and the runs they request executed in this process (no process start per run),
  with `batchSize: 1000`, one batch of everything, and a config that sets no tuning key (batchSize 8), each
  right after its own measurement of the baselines;
- out of the box: the real `dagster-daemon run -w workspace.yaml` on the project's dagster.yaml and an
  ingest.yaml with no tuning key, first sensor tick to last object (and daemon start to first tick);
- latency: put in the source -> object in the mirror (p50 / p95) with the daemon running, at `interval: 5s`
  and (with `--latency-default`, ~6 min) at the default interval.

    python -m benchmarks sync [--objects 5000] [--ootb-objects 2000,10000] [--latency-default]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import peak_rss_mib, print_ratios, timed
from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BODY = b"x" * 1024


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **TEST_CREDENTIALS, **extra}
    env.pop("AWS_CA_BUNDLE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return env


def _fill(s3: Any, bucket: str, count: int, prefix: str = "obj/") -> None:
    s3.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"{prefix}{i:07d}", Body=BODY), range(count)))


def _count(s3: Any, bucket: str) -> int:
    return sum(page.get("KeyCount", 0) for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))


def _drop(s3: Any, bucket: str) -> None:
    """Remove a measured destination: moto slows down as it holds more objects, so each measurement must
    find the server as the first one did."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if objects:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
    s3.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------------------------------------- baselines


def bench_aws(server: MotoServer, s3: Any, source: str, objects: int) -> float | None:
    aws = BIN / "aws"
    if not aws.exists():
        print("  aws CLI not installed: baseline skipped")
        return None
    s3.create_bucket(Bucket="dst-aws")
    cmd = [str(aws), "s3", "sync", f"s3://{source}", "s3://dst-aws", "--endpoint-url", server.endpoint_url, "--only-show-errors"]
    with timed() as t:
        subprocess.run(cmd, env=_env(), check=True)
    assert _count(s3, "dst-aws") == objects
    _drop(s3, "dst-aws")
    return objects / t["seconds"]


def bench_rclone(server: MotoServer, s3: Any, objects: int) -> float | None:
    rclone = shutil.which("rclone")
    if rclone is None:
        print("  rclone not installed (apt-get install -y rclone): baseline skipped")
        return None
    s3.create_bucket(Bucket="dst-rclone")
    env = _env(
        RCLONE_CONFIG_MOTO_TYPE="s3",
        RCLONE_CONFIG_MOTO_PROVIDER="Other",
        RCLONE_CONFIG_MOTO_ENDPOINT=server.endpoint_url,
        RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        RCLONE_CONFIG_MOTO_REGION="us-east-1",
        RCLONE_CONFIG_MOTO_FORCE_PATH_STYLE="true",
    )
    with timed() as t:
        subprocess.run([rclone, "copy", "moto:src", "moto:dst-rclone", "--transfers", "16", "-q"], env=env, check=True)
    assert _count(s3, "dst-rclone") == objects
    _drop(s3, "dst-rclone")
    return objects / t["seconds"]


def bench_boto3(server: MotoServer, objects: int) -> float:
    s3 = server.client("s3")
    s3.create_bucket(Bucket="dst-boto3")
    with timed() as t:
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="src") for o in page.get("Contents", [])]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda k: s3.copy_object(CopySource={"Bucket": "src", "Key": k}, Bucket="dst-boto3", Key=k), keys))
    assert _count(s3, "dst-boto3") == objects
    _drop(s3, "dst-boto3")
    return objects / t["seconds"]


# ---------------------------------------------------------------------------------------------- ours


def _config(server: MotoServer, source: str, bucket: str, work: Path, name: str, **workflow: Any) -> Path:
    store = {"type": "s3", "endpoint": server.endpoint_url, "region": "us-east-1"}
    doc = {
        "sources": [{"name": "src", "bucket": source, **store}],
        "destinations": [{"name": "dst", "bucket": bucket, **store}],
        "workflows": [{"name": name, "source": "src", "destinations": ["dst"], **workflow}],
        "state": {"type": "filesystem", "path": str(work / f"state-{name}")},
    }
    path = work / f"ingest-{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bench_in_process(server: MotoServer, s3: Any, work: Path, objects: int, name: str, **workflow: Any) -> tuple[float, dict[str, Any]]:
    """First sensor tick to last object: sensor evaluations and the runs they request, executed in this
    process on a SQLite instance (no daemon, no process per run)."""
    import dagster as dg

    from ingest_pipelines.config import load_config
    from ingest_pipelines.defs import build_definitions

    bucket = f"dst-{name.replace('_', '-')}"
    s3.create_bucket(Bucket=bucket)
    config_path = _config(server, "src", bucket, work, name, **workflow)
    home = work / f"dagster_home-{name}"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(home)
    defs = build_definitions(load_config(config_path))
    sensor = defs.resolve_sensor_def(f"{name}__sync_sensor")
    runs = 0
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        cursor = None
        while True:
            with dg.build_sensor_context(
                instance=instance, cursor=cursor, resources=defs.resources, repository_def=defs.get_repository_def()
            ) as context:
                data = sensor.evaluate_tick(context)
            cursor = data.cursor
            for request in data.dynamic_partitions_requests or []:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            for request in data.run_requests or []:
                result = defs.resolve_job_def(request.job_name).execute_in_process(instance=instance, tags=request.tags)
                assert result.success
                runs += 1
            # the copies are done when the tick and its runs are: the listing that checks it is not timed (the
            # baselines' checks are not either)
            seconds = time.perf_counter() - started
            if _count(s3, bucket) >= objects:
                break
    _drop(s3, bucket)
    return objects / seconds, {"runs": runs, "seconds": round(seconds, 2)}


class Daemon:
    """`dagster-daemon run -w workspace.yaml` on a DAGSTER_HOME with the project's dagster.yaml."""

    def __init__(self, work: Path, config: Path, name: str):
        self.home = work / f"dagster_home-{name}"
        self.home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", self.home / "dagster.yaml")
        self.config = config
        self.name = name
        self.log = work / f"daemon-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.instance: Any = None

    def __enter__(self) -> Daemon:
        import dagster as dg

        self.instance = dg.DagsterInstance.from_config(str(self.home))
        self.started = time.time()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                env=_env(DAGSTER_HOME=str(self.home), INGEST_CONFIG=str(self.config)),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        if self.instance is not None:
            self.instance.dispose()

        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def first_tick(self) -> float | None:
        """When the workflow's sensor first ticked (unix seconds), from the instance."""
        states = [s for s in self.instance.all_instigator_state() if s.name == f"{self.name}__sync_sensor"]
        if not states:
            return None
        ticks = self.instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id)
        return min((t.timestamp for t in ticks), default=None)

    def settled(self) -> tuple[bool, float | None]:
        """Whether some run has finished and none is queued or in progress, and when the last one ended: read from
        the instance, so waiting for the copies costs the S3 server nothing (listing the mirror every 0.2 s took
        a third of the server's CPU during a 2,000-object run)."""
        records = self.instance.get_run_records()
        if not records or any(not r.dagster_run.is_finished for r in records):
            return False, None
        return True, max((r.end_time or 0.0) for r in records) or None

    def runs(self) -> int:
        return len(self.instance.get_run_records())

    def first_run_times(self) -> tuple[float, float | None, float | None]:
        """When the first run was created, started (its worker began it) and ended (unix seconds), from the instance."""
        first = min(self.instance.get_run_records(), key=lambda record: record.create_timestamp.timestamp())
        return first.create_timestamp.timestamp(), first.start_time, first.end_time


def bench_daemon_defaults(server: MotoServer, s3: Any, work: Path, objects: int) -> dict[str, Any]:
    """Out of the box: no tuning key, the real daemon; N objects already in the source. `aws s3 sync` of the same
    source right before and right after ours: the ratio is against the mean of the two rates (the machine's speed
    drifts over the seconds of a case, by as much as 20% here)."""
    source = f"src-ootb-{objects}"
    _fill(s3, source, objects)
    aws_before = bench_aws(server, s3, source, objects)
    name = f"ootb_{objects}"
    bucket = f"dst-ootb-{objects}"
    s3.create_bucket(Bucket=bucket)
    config = _config(server, source, bucket, work, name, sensor="running")
    with Daemon(work, config, name) as daemon:
        deadline = time.monotonic() + 600
        done = None
        while daemon.first_tick() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # poll interval of a bounded wait
        while time.monotonic() < deadline:
            time.sleep(0.2)  # poll interval of a bounded wait
            settled, ended = daemon.settled()
            # the mirror is listed only when no run is at work: the last object was copied before that run ended
            if settled and _count(s3, bucket) >= objects:
                done = ended or time.time()
                break
        done = done or time.time()
        first = daemon.first_tick()
        runs = daemon.runs()
        created, started, ended = daemon.first_run_times() if runs else (None, None, None)
    copied = _count(s3, bucket)
    _drop(s3, bucket)
    aws_after = bench_aws(server, s3, source, objects)
    _drop(s3, source)
    assert copied == objects, f"{copied} of {objects} objects after 10 minutes (see {daemon.log})"
    aws = statistics.mean((aws_before, aws_after)) if aws_before and aws_after else None
    assert first is not None
    seconds = done - first
    result = {
        "objects": objects,
        "first_tick_to_last_object_seconds": round(seconds, 2),
        "daemon_start_to_first_tick_seconds": round(first - daemon.started, 2),
        "runs": runs,
        "objects_per_second": round(objects / seconds, 1),
    }
    # where the time went: the first tick (listing, commit) until its run exists, the queue and the worker's start,
    # the run itself (the copies)
    phases = ""
    if created and started and ended:
        result["first_run_seconds"] = {
            "tick_to_created": round(created - first, 2),
            "created_to_started": round(started - created, 2),
            "run": round(ended - started, 2),
        }
        phases = f" [first tick -> run created {created - first:.2f}s, -> run started {started - created:.2f}s, run {ended - started:.2f}s]"
    if aws and aws_before and aws_after:
        result["aws_s3_sync_objects_per_second"] = round(aws, 1)
        result["aws_s3_sync_before_after"] = [round(aws_before, 1), round(aws_after, 1)]
        result["ratio_vs_aws_s3_sync"] = round(objects / seconds / aws, 2)
    print(
        f"  out of the box, {objects} objects: first tick -> last object {seconds:.1f}s ({objects / seconds:.0f}/s, {runs} run(s))"
        + (
            f", aws s3 sync {aws:.0f}/s (before {aws_before:.0f}, after {aws_after:.0f}): ours/aws = {objects / seconds / aws:.2f}"
            if aws and aws_before and aws_after
            else ""
        )
        + f"; daemon start -> first tick {first - daemon.started:.1f}s"
        + phases
    )
    return result


def bench_latency(server: MotoServer, s3: Any, work: Path, puts: int, window: float, interval: str | None) -> dict[str, Any]:
    """Puts at random moments over `window` seconds with the daemon running; each object's time to the mirror."""
    label = interval or "default"
    name = f"latency_{label.replace('s', '')}"
    source, bucket = f"src-{name.replace('_', '-')}", f"dst-{name.replace('_', '-')}"
    s3.create_bucket(Bucket=source)
    s3.create_bucket(Bucket=bucket)
    workflow: dict[str, Any] = {"sensor": "running"}
    if interval:
        workflow["interval"] = interval
    config = _config(server, source, bucket, work, name, **workflow)
    rng = random.Random(7)
    moments = sorted(rng.uniform(0, window) for _ in range(puts))
    put_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    with Daemon(work, config, name) as daemon:
        deadline = time.monotonic() + 120
        while daemon.first_tick() is None and time.monotonic() < deadline:
            time.sleep(0.5)  # the sensor is running: the empty snapshot is done
        time.sleep(5)
        start = time.time()
        index = 0
        end = start + window + 900
        while time.time() < end and len(seen_at) < puts:
            now = time.time()
            while index < puts and now - start >= moments[index]:
                key = f"obj/{index:04d}"
                s3.put_object(Bucket=source, Key=key, Body=BODY)
                put_at[key] = time.time()
                index += 1
            present = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket) for o in page.get("Contents", [])}
            for key in present - set(seen_at):
                seen_at[key] = time.time()
            time.sleep(0.2)  # polling resolution of the measurement
    latencies = sorted(seen_at[k] - put_at[k] for k in seen_at)
    result = {
        "interval": label,
        "puts": puts,
        "arrived": len(latencies),
        "p50_seconds": round(statistics.median(latencies), 1) if latencies else None,
        "p95_seconds": round(latencies[max(0, int(round(0.95 * len(latencies))) - 1)], 1) if latencies else None,
    }
    print(
        f"  put -> mirror at interval {label}: p50 {result['p50_seconds']}s, p95 {result['p95_seconds']}s ({len(latencies)}/{puts} arrived)"
    )
    return result


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sync", description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=int(os.environ.get("BENCH_SYNC_OBJECTS", "5000")))
    parser.add_argument("--ootb-objects", default=os.environ.get("BENCH_SYNC_OOTB_OBJECTS", "2000,10000"))
    parser.add_argument("--latency-default", action="store_true", help="also measure latency at the default interval (~6 min)")
    args = parser.parse_args(argv)
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)
    objects = args.objects
    results: dict[str, Any] = {"objects": objects}
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as server:
        work = Path(tmp)
        s3 = server.client("s3")
        with timed() as fill:
            _fill(s3, "src", objects)
        print(f"  source: {objects} objects of 1 KiB ({fill['seconds']:.1f}s to create)")

        def measure_baselines() -> list[tuple[str, float]]:
            measured = []
            for name, fn in (
                ("aws s3 sync", lambda: bench_aws(server, s3, "src", objects)),
                ("rclone copy --transfers 16", lambda: bench_rclone(server, s3, objects)),
                ("boto3 16 threads list+copy", lambda: bench_boto3(server, objects)),
            ):
                rate = fn()
                if rate is not None:
                    measured.append((name, rate))
            return measured

        cases = (
            (
                "batch_1000",
                f"batchSize 1000, threads 16 ({objects // 1000} batches)",
                {"batchSize": 1000, "threads": 16, "settleDelay": "0s"},
            ),
            ("one_batch", f"batchSize {objects} (one batch)", {"batchSize": objects, "threads": 16, "settleDelay": "0s"}),
            ("defaults", f"no tuning key (batchSize 8: {objects // 8} batches)", {}),
        )
        for key, title, workflow in cases:
            # the baselines right before each case: the machine's speed drifts over the minutes of the run
            baselines = measure_baselines()
            results[f"baselines_{key}"] = {name: round(rate, 1) for name, rate in baselines}
            rate, detail = bench_in_process(server, s3, work, objects, key, **workflow)
            results[f"ours_{key}"] = {"objects_per_second": round(rate, 1), **detail}
            results[f"ratios_{key}"] = print_ratios(
                f"sync {objects} x 1 KiB S3->S3 in-process, first tick to last object: {title}", "objects/s", ("ours", rate), baselines
            )
        _drop(s3, "src")
        results["out_of_the_box"] = [bench_daemon_defaults(server, s3, work, int(n)) for n in args.ootb_objects.split(",") if n]
        results["latency"] = [bench_latency(server, s3, work, puts=20, window=60, interval="5s")]
        if args.latency_default:
            results["latency"].append(bench_latency(server, s3, work, puts=6, window=300, interval=None))
        results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return results


if __name__ == "__main__":
    print(main(sys.argv[1:]))
