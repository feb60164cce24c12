"""Bundle ingest throughput, memory and latency: a Pacifica bundle (a few hundred files, metadata.txt last)
validated and ingested from the moto S3 server (a subprocess) into an archive bucket on the same server.

Ours (BundleValidator via run_job: stream, hash, write each file once to its final key, metadata.json last)
is compared with the least a pipeline can do, measured in the same run: stream the tar from the drop bucket,
sha1 each member and PUT it to the archive with the same thread count (4). A tar + sha1 read from S3 without
writing is shown too. Each variant runs in its own process; its peak RSS is that process's own (VmHWM).
Then the POST -> complete latency of a 1 MiB bundle through `ingest-pipelines serve` beside a real
`dagster-daemon` on a DAGSTER_HOME with the project's dagster.yaml.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import print_ratios, timed

MiB = 1024 * 1024
DEFAULT_SIZES = (256 * MiB, 1024 * MiB)
FILES_PER_GIB = 300
DROP, ARCHIVE = "bench-drop", "bench-archive"
REPO_ROOT = Path(__file__).resolve().parent.parent


class PatternBody(io.RawIOBase):
    """`size` bytes of a repeated random block, hashed as they are read (no file data in memory)."""

    def __init__(self, pattern: bytes, size: int, digest: Any):
        self.pattern, self.left, self.digest = pattern, size, digest

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left, len(self.pattern))
        data = self.pattern[:n]
        buffer[:n] = data
        self.digest.update(data)
        self.left -= n
        return n

    def readable(self) -> bool:
        return True


def write_bundle(path: Path, total: int) -> int:
    """A bundle of ~`total` bytes of data on local disk (streamed, never in memory); returns the file count."""
    count = max(4, total * FILES_PER_GIB // (1024 * MiB))
    size = total // count
    block = os.urandom(MiB)
    entries: list[dict[str, Any]] = []
    with tarfile.open(path, "w") as tar:
        for index in range(count):
            offset = (index * 7919) % MiB
            pattern = block[offset:] + block[:offset]
            digest = hashlib.sha1()
            info = tarfile.TarInfo(f"data/run{index // 50}/file{index:04d}.bin")
            info.size = size

            tar.addfile(info, io.BufferedReader(PatternBody(pattern, size, digest), MiB))
            entries.append(
                {
                    "destinationTable": "Files",
                    "name": f"file{index:04d}.bin",
                    "subdir": f"run{index // 50}",
                    "size": size,
                    "hashsum": digest.hexdigest(),
                    "hashtype": "sha1",
                }
            )
        meta = json.dumps(entries).encode()
        info = tarfile.TarInfo("metadata.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return count


def tarfile_and_hash(stream: Any) -> int:
    """Reading only: what tarfile + hashlib alone cost for the same stream."""
    total = 0
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                digest = hashlib.sha1()
                while chunk := handle.read(MiB):
                    digest.update(chunk)
                    total += len(chunk)
            tar.members.clear()
    return total


def minimal_pipeline(stream: Any, archive: Any, prefix: str, threads: int = 4, small: int = 8 * MiB) -> int:
    """The baseline: the least work that moves a bundle into an archive. Stream the tar, sha1 each member and
    PUT it to its key with `threads` writers (large members streamed as multipart, as ours does); no checks."""
    total = 0
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=threads) as pool, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            tar.members.clear()
            if not member.isreg():
                continue
            handle = tar.extractfile(member)
            key = prefix + member.name
            if member.size <= small:
                data = handle.read()
                hashlib.sha1(data).hexdigest()
                while len(pending) >= threads:
                    pending.pop(0).result()
                pending.append(pool.submit(archive.put_bytes, key, data))
            else:
                archive.upload_fileobj(key, _Sha1Reader(handle))
            total += member.size
        for future in pending:
            future.result()
    return total


class _Sha1Reader:
    def __init__(self, raw: Any):
        self.raw, self.digest = raw, hashlib.sha1()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def peak_rss_mib() -> float:
    """This process's own peak RSS (VmHWM). `ru_maxrss` would not do: Linux carries it across exec, so a child
    started by a big parent reports the parent's peak (both variants showed 518 MiB, the benchmark's own)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _config(endpoint: str, workdir: Path, **workflow: Any) -> dict[str, Any]:
    def store(name: str, bucket: str, prefix: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": "s3",
            "endpoint": endpoint,
            "bucket": bucket,
            "prefix": prefix,
            "region": "us-east-1",
            "accessKeyID": "$AWS_ACCESS_KEY_ID",
            "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
        }

    return {
        "sources": [store("drop", DROP, "incoming/")],
        "destinations": [store("archive", ARCHIVE, "archive/")],
        "workflows": [
            {
                "name": "bench",
                "kind": "bundle",
                "source": "drop",
                "destinations": ["archive"],
                "jobs": f"sqlite:///{workdir}/jobs.db",
                **workflow,
            }
        ],
        "state": {"type": "filesystem", "path": str(workdir / "state")},
    }


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process, so that its peak memory is its own."""
    from ingest_pipelines.bundles.ingest import run_job
    from ingest_pipelines.bundles.jobs import JobStore
    from ingest_pipelines.config import parse_config
    from ingest_pipelines.storage import open_store

    workdir = Path(args.dir)
    config = parse_config(_config(args.endpoint, workdir))
    source, archive = open_store(config.source("drop")), open_store(config.destination("archive"))
    key = f"bundle-{args.size}.tar"
    if args.child == "read-s3":
        with timed() as t:
            data = tarfile_and_hash(source.open(key))
    elif args.child == "minimal":
        with timed() as t:
            data = minimal_pipeline(source.open(key), archive, "minimal/")
        _empty(archive, "minimal/")
    else:
        workflow = config.workflows[0]
        jobs = JobStore(workflow.jobs_url(config))
        job = jobs.create(workflow.name, key, source.head(key).etag)
        with timed() as t:
            outcome = run_job(workflow, jobs, job.job_id, source, archive)
        data = outcome.result.bytes
        assert jobs.get(job.job_id).state == "OK"
        _empty(archive, f"{job.job_id}/")
    return {"seconds": t["seconds"], "bytes": data, "mb_per_s": data / 1e6 / t["seconds"], "peak_rss_mib": peak_rss_mib()}


def _empty(archive: Any, prefix: str) -> None:
    """Leave the moto server as it was: the next variant starts from an empty archive."""
    from ingest_pipelines.bundles.archive import delete_prefix

    delete_prefix(archive, prefix)


def _child_env() -> dict[str, str]:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("AWS_CA_BUNDLE", None)
    return env


def _run_child(kind: str, size: int, endpoint: str, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_bundle", "--child", kind, "--size", str(size), "--endpoint", endpoint]
    command += ["--dir", str(workdir)]
    out = subprocess.run(command, env=_child_env(), check=True, capture_output=True, text=True, cwd=REPO_ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def serve_latency(endpoint: str, workdir: Path, bundle: bytes, count: int = 5) -> dict[str, Any]:
    """POST -> complete seconds of `bundle` through `ingest-pipelines serve` (documented defaults: run from the
    project folder, no --workspace) with `dagster-daemon run -w workspace.yaml` and the project's dagster.yaml."""
    import requests
    import yaml

    from ingest_pipelines.testing import free_port

    home = workdir / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    config_path = workdir / "ingest-serve.yaml"
    config_path.write_text(yaml.safe_dump(_config(endpoint, workdir, interval="30s")))
    env = {**_child_env(), "DAGSTER_HOME": str(home), "INGEST_CONFIG": str(config_path)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    port = free_port()
    bin_dir = Path(sys.executable).parent
    logs = (workdir / "daemon.log").open("wb"), (workdir / "serve.log").open("wb")
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"], env=env, cwd=REPO_ROOT, stdout=logs[0], stderr=subprocess.STDOUT
    )
    serve = subprocess.Popen(
        [str(bin_dir / "ingest-pipelines"), "serve", "--port", str(port)], env=env, cwd=REPO_ROOT, stdout=logs[1], stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    seconds: list[float] = []
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/get_state", params={"job_id": 0}, timeout=2).status_code == 404:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or serve.poll() is not None:
                raise RuntimeError(f"serve did not come up; see {workdir / 'serve.log'}")
            time.sleep(0.2)
        for index in range(count + 1):  # the first is a warm-up (code server imports, first dequeue)
            started = time.perf_counter()
            job_id = requests.post(f"{url}/ingest", data=bundle, timeout=120).json()["job_id"]
            deadline = time.monotonic() + 300
            while True:
                state = requests.get(f"{url}/get_state", params={"job_id": job_id}, timeout=10).json()
                if state["complete"]:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not complete: {state}")
                time.sleep(0.05)
            if state["state"] != "OK":
                raise RuntimeError(f"job {job_id} ended {state}")
            if index:
                seconds.append(time.perf_counter() - started)
    finally:
        for process in (serve, daemon):
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in logs:
            log.close()
    return {"seconds": seconds, "median_seconds": statistics.median(seconds)}


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench_bundle")
    parser.add_argument("--sizes", default=",".join(str(s // MiB) for s in DEFAULT_SIZES), help="bundle sizes in MiB")
    parser.add_argument("--no-latency", action="store_true", help="skip the POST -> complete latency through serve")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each variant per size (the median is shown)")
    args = parser.parse_args(argv)
    from ingest_pipelines.testing import MotoServer

    results: dict[str, Any] = {"where": "moto S3 server (subprocess) -> archive bucket on the same server", "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as server:
        workdir = Path(tmp)
        s3 = server.client("s3")
        s3.create_bucket(Bucket=DROP)
        s3.create_bucket(Bucket=ARCHIVE)
        for mib in [1, *(int(x) for x in args.sizes.split(","))]:
            size = mib * MiB
            path = workdir / f"bundle-{size}.tar"
            files = write_bundle(path, size)
            s3.upload_file(str(path), DROP, f"incoming/bundle-{size}.tar")
            row: dict[str, Any] = {"files": files, "tar_bytes": path.stat().st_size}
            # the machine is shared and the moto server's speed drifts: alternate the variants and keep each one's median
            kinds = ("minimal", "ours", "read-s3")
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            for round_ in range(args.repeat):
                for kind in kinds if round_ % 2 == 0 else tuple(reversed(kinds)):
                    runs[kind].append(_run_child(kind, size, server.endpoint_url, workdir))
            for kind, measured in runs.items():
                middle = sorted(measured, key=lambda m: m["mb_per_s"])[len(measured) // 2]
                row[kind] = {**middle, "all_mb_per_s": [round(m["mb_per_s"], 1) for m in measured]}
            s3.delete_object(Bucket=DROP, Key=f"incoming/bundle-{size}.tar")
            if mib == 1:
                results["one_mib"] = row
                if not args.no_latency:
                    results["serve_latency"] = serve_latency(server.endpoint_url, workdir, path.read_bytes())
                path.unlink()
                continue
            path.unlink()
            results["sizes"][mib] = row
            print(f"\nbundle of {mib} MiB, {files} files (metadata.txt last, sha1); median of {args.repeat} alternating runs")
            row["ratios"] = print_ratios(
                "  throughput",
                "MB/s of data files",
                ("ours: validate + write once (S3 -> S3)", row["ours"]["mb_per_s"]),
                [
                    ("minimal: stream + sha1 + PUT, 4 threads", row["minimal"]["mb_per_s"]),
                    ("tarfile + sha1 from S3, no writes", row["read-s3"]["mb_per_s"]),
                ],
            )
            print(
                f"  peak RSS MiB (each in its own process): ours {row['ours']['peak_rss_mib']:.0f}, "
                f"minimal {row['minimal']['peak_rss_mib']:.0f}, read only {row['read-s3']['peak_rss_mib']:.0f}"
            )
    peaks = {mib: row["ours"]["peak_rss_mib"] for mib, row in results["sizes"].items()}
    print(f"\npeak RSS of ours by bundle size (MiB -> MiB): {peaks}")
    results["peak_rss_mib_by_size"] = peaks
    if "serve_latency" in results:
        latency = results["serve_latency"]
        ingest = results["one_mib"]["ours"]["seconds"]
        print(
            f"\n1 MiB bundle POST /ingest -> complete through serve + dagster-daemon: median {latency['median_seconds']:.2f} s "
            f"({', '.join(f'{s:.2f}' for s in latency['seconds'])}); the ingest itself (in one process) {ingest:.2f} s, "
            f"latency / ingest = {latency['median_seconds'] / ingest:.1f}"
        )
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--size", type=int)
    parser.add_argument("--endpoint")
    parser.add_argument("--dir")
    known, rest = parser.parse_known_args()
    if known.child:
        print(json.dumps(child(known)))
    else:
        main(rest)
