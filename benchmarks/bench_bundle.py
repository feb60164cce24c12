"""Bundle ingest throughput and memory: a Pacifica bundle (a few hundred files, metadata.txt last) validated
and ingested from the moto S3 server (a subprocess) into an archive bucket on the same server.

Ours (BundleValidator via run_job: stream, hash, stage, promote) is compared with reading the same tar with
`tarfile` + hashlib in the same run (from S3 and from local disk); peak memory is measured per size in child processes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mib, print_ratios, timed

MiB = 1024 * 1024
DEFAULT_SIZES = (256 * MiB, 1024 * MiB)
FILES_PER_GIB = 300
DROP, ARCHIVE = "bench-drop", "bench-archive"


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
    """The baseline: what tarfile + hashlib alone cost for the same stream."""
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


def _config(endpoint: str, workdir: Path) -> Any:
    from ingest_pipelines.config import parse_config

    def store(name: str, bucket: str, prefix: str) -> dict[str, Any]:
        return {"name": name, "type": "s3", "endpoint": endpoint, "bucket": bucket, "prefix": prefix, "region": "us-east-1"}

    return parse_config(
        {
            "sources": [store("drop", DROP, "incoming/")],
            "destinations": [store("archive", ARCHIVE, "archive/")],
            "workflows": [
                {"name": "bench", "kind": "bundle", "source": "drop", "destinations": ["archive"], "jobs": f"sqlite:///{workdir}/jobs.db"}
            ],
            "state": {"type": "filesystem", "path": str(workdir / "state")},
        }
    )


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh process, so that its peak memory is its own."""
    from ingest_pipelines.bundles.ingest import run_job
    from ingest_pipelines.bundles.jobs import JobStore
    from ingest_pipelines.storage import open_store

    workdir = Path(args.dir)
    config = _config(args.endpoint, workdir)
    source, archive = open_store(config.source("drop")), open_store(config.destination("archive"))
    key = f"bundle-{args.size}.tar"
    if args.child == "baseline-local":
        with timed() as t, open(workdir / key, "rb") as handle:
            data = tarfile_and_hash(handle)
    elif args.child == "baseline-s3":
        with timed() as t:
            body = source.open(key)
            data = tarfile_and_hash(body)
    else:
        workflow = config.workflows[0]
        jobs = JobStore(workflow.jobs_url(config))
        job = jobs.create(workflow.name, key, source.head(key).etag)
        with timed() as t:
            outcome = run_job(workflow, jobs, job.job_id, source, archive)
        data = outcome.result.bytes
        assert jobs.get(job.job_id).state == "OK"
        # leave the moto server as it was: the next size starts from an empty archive
        for info in list(archive.list(f"{job.job_id}/")):
            archive.delete(info.key)
    return {"seconds": t["seconds"], "bytes": data, "mb_per_s": data / 1e6 / t["seconds"], "peak_rss_mib": peak_rss_mib()}


def _run_child(kind: str, size: int, endpoint: str, workdir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_bundle", "--child", kind, "--size", str(size), "--endpoint", endpoint]
    command += ["--dir", str(workdir)]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    env.pop("AWS_CA_BUNDLE", None)
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench_bundle")
    parser.add_argument("--sizes", default=",".join(str(s // MiB) for s in DEFAULT_SIZES), help="bundle sizes in MiB")
    args = parser.parse_args(argv)
    from ingest_pipelines.testing import MotoServer

    results: dict[str, Any] = {"where": "moto S3 server (subprocess) -> archive bucket on the same server", "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp, MotoServer(log_path=Path(tmp) / "moto.log") as server:
        workdir = Path(tmp)
        s3 = server.client("s3")
        s3.create_bucket(Bucket=DROP)
        s3.create_bucket(Bucket=ARCHIVE)
        for mib in (int(x) for x in args.sizes.split(",")):
            size = mib * MiB
            path = workdir / f"bundle-{size}.tar"
            files = write_bundle(path, size)
            s3.upload_file(str(path), DROP, f"incoming/bundle-{size}.tar")
            row = {"files": files, "tar_bytes": path.stat().st_size}
            for kind in ("baseline-local", "baseline-s3", "ours"):
                row[kind] = _run_child(kind, size, server.endpoint_url, workdir)
            s3.delete_object(Bucket=DROP, Key=f"incoming/bundle-{size}.tar")
            path.unlink()
            results["sizes"][mib] = row
            print(f"\nbundle of {mib} MiB, {files} files (metadata.txt last, sha1)")
            row["ratios"] = print_ratios(
                "  throughput",
                "MB/s of data files",
                ("ours: validate + stage + promote (S3 -> S3)", row["ours"]["mb_per_s"]),
                [
                    ("tarfile + sha1, streamed from S3", row["baseline-s3"]["mb_per_s"]),
                    ("tarfile + sha1, local file", row["baseline-local"]["mb_per_s"]),
                ],
            )
            print(f"  peak RSS MiB: ours {row['ours']['peak_rss_mib']:.0f}, tarfile+sha1 from S3 {row['baseline-s3']['peak_rss_mib']:.0f}")
    peaks = {mib: row["ours"]["peak_rss_mib"] for mib, row in results["sizes"].items()}
    print(f"\npeak RSS of ours by bundle size (MiB -> MiB): {peaks}")
    results["peak_rss_mib_by_size"] = peaks
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
