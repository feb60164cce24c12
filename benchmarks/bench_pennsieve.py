"""Pennsieve import uploads (200 files of 1 MiB, 4 files of 64 MiB) in MB/s, against `aws s3 cp --recursive`
and a plain boto3 upload_file loop on the same moto S3 server process, in the same run."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from benchmarks.common import peak_rss_mib, print_ratios, timed
from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS
from ingest_pipelines.testing.pennsieve import PennsieveTestServer

MIB = 1024 * 1024
SETS = {"small": (200, 1 * MIB), "large": (4, 64 * MIB)}
BUCKET = "pennsieve-uploads"
AWS_CLI = Path(sys.executable).with_name("aws")


def _generate(root: Path) -> dict[str, Path]:
    folders = {}
    for name, (count, size) in SETS.items():
        folder = root / name
        folder.mkdir(parents=True)
        block = os.urandom(size)
        for i in range(count):
            # distinct content per file without paying for os.urandom each time
            (folder / f"part-{i:04d}.parquet").write_bytes(i.to_bytes(8, "big") + block[8:])
        folders[name] = folder
    return folders


def _empty(s3: Any) -> None:
    """Drop every uploaded object so the moto server's memory stays flat between variants."""
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


def _ours(server: MotoServer, folder: Path, state: Path) -> float:
    from ingest_pipelines.pennsieve.target import run_target

    with PennsieveTestServer(tokens={"bench-run": "bench-token"}, bucket=BUCKET) as api:
        env = {
            "INPUT_DIR": str(folder),
            "CALLBACK_TOKEN": "bench-token",
            "EXECUTION_RUN_ID": "bench-run",
            "DATASET_ID": "N:dataset:bench",
            "PACKAGE_ID": "N:package:bench",
            "PENNSIEVE_API_HOST2": api.url,
            "PENNSIEVE_STATE_DIR": str(state),
        }
        with timed() as clock:
            result = run_target(env)
    assert result.uploaded_files == len(list(folder.iterdir())), result
    return clock["seconds"]


def _aws_cli(server: MotoServer, folder: Path, name: str) -> float:
    env = {**os.environ, **TEST_CREDENTIALS}
    env.pop("AWS_CA_BUNDLE", None)
    command = [
        str(AWS_CLI),
        "--endpoint-url",
        server.endpoint_url,
        "s3",
        "cp",
        "--recursive",
        "--quiet",
        str(folder),
        f"s3://{BUCKET}/cli-{name}/",
    ]
    with timed() as clock:
        subprocess.run(command, env=env, check=True)
    return clock["seconds"]


def _boto3_loop(server: MotoServer, folder: Path, name: str) -> float:
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=16),
    )
    with timed() as clock:
        for path in sorted(folder.iterdir()):
            client.upload_file(str(path), BUCKET, f"loop-{name}/{path.name}")
    return clock["seconds"]


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per variant; the median is reported")
    args = parser.parse_args(argv)
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.update(TEST_CREDENTIALS)
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-pennsieve-"))
    try:
        folders = _generate(work / "input")
        with MotoServer(log_path=work / "moto.log") as server:
            os.environ["AWS_ENDPOINT_URL_S3"] = server.endpoint_url
            s3 = server.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            for name, folder in folders.items():
                count, size = SETS[name]
                megabytes = count * size / 1e6
                variants = {
                    "boto3 upload_file loop": lambda f=folder, n=name: _boto3_loop(server, f, n),
                    "aws s3 cp --recursive": lambda f=folder, n=name: _aws_cli(server, f, n),
                    "ours (pennsieve-target)": lambda f=folder, n=name: _ours(server, f, work / f"state-{n}-{time.monotonic_ns()}"),
                }
                runs: dict[str, list[float]] = {variant: [] for variant in variants}
                # interleaved repeats, median kept: the machine is shared, one run alone says little
                names = list(variants)
                for repeat in range(args.repeat):
                    for variant in names[repeat % len(names) :] + names[: repeat % len(names)]:  # rotate the order
                        runs[variant].append(variants[variant]())
                        _empty(s3)
                seconds = {variant: statistics.median(values) for variant, values in runs.items()}
                rates = {variant: megabytes / value for variant, value in seconds.items()}
                ratios = print_ratios(
                    f"{count} files of {size // MIB} MiB",
                    "MB/s",
                    ("ours (pennsieve-target)", rates["ours (pennsieve-target)"]),
                    [(v, r) for v, r in rates.items() if not v.startswith("ours")],
                )
                results[name] = {"files": count, "file_mib": size // MIB, "mb_per_s": rates, "seconds": runs, "ratios": ratios}
        results["peak_rss_mib"] = peak_rss_mib()
        print(f"peak RSS of the benchmark process (ours + boto3 loop): {results['peak_rss_mib']:.0f} MiB")
    finally:
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
