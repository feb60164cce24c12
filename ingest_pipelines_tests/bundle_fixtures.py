"""Bundles for the bundle tests: tar builders (plain/gzip, metadata first or last, hostile members), an
ingest.yaml with a drop bucket and an archive bucket on the moto server, and helpers for tests that run the
documented processes (a DAGSTER_HOME with the project's dagster.yaml, GET /get_state, a run worker's pid)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import requests

from ingest_pipelines.testing import MotoServer
from ingest_pipelines_tests.conftest import REPO_ROOT

DROP_BUCKET = "drop"
ARCHIVE_BUCKET = "archive"
ARCHIVE_PREFIX = "archive/"

SAMPLE_FILES = {
    "mywork/project/proposal.doc": b"proposal " * 100,
    "mywork/experiment/results.csv": b"a,b\n1,2\n" * 50,
    "mywork/experiment/results.doc": b"results",
    "empty.txt": b"",
}


def file_entries(files: dict[str, bytes], hashtype: str = "sha1", prefixed: bool = False) -> list[dict[str, Any]]:
    """metadata.txt entries for `files` (path under data/ -> bytes)."""
    entries: list[dict[str, Any]] = [{"destinationTable": "Transactions.submitter", "value": 10}]
    for index, (path, data) in enumerate(files.items()):
        subdir, _, name = path.rpartition("/")
        digest = hashlib.new(hashtype, data).hexdigest()
        entries.append(
            {
                "destinationTable": "Files",
                "_id": index + 1,
                "name": name,
                "subdir": subdir,
                "size": len(data),
                "hashsum": f"{hashtype}:{digest}" if prefixed else digest,
                "hashtype": hashtype,
                "mimetype": "application/octet-stream",
            }
        )
    return entries


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 1_700_000_000
    tar.addfile(info, io.BytesIO(data))


def build_tar(
    files: dict[str, bytes] | None = None,
    metadata: Any = None,
    *,
    metadata_first: bool = True,
    compress: bool = False,
    extra: list[tarfile.TarInfo] | None = None,
    raw_metadata: bytes | None = None,
) -> bytes:
    """A bundle: metadata.txt (from `metadata`, default entries for `files`) and data/ members."""
    files = SAMPLE_FILES if files is None else files
    meta_bytes = (
        raw_metadata if raw_metadata is not None else json.dumps(metadata if metadata is not None else file_entries(files)).encode()
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if metadata_first:
            _add(tar, "metadata.txt", meta_bytes)
        for path, data in files.items():
            _add(tar, f"data/{path}", data)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isreg() else None)
        if not metadata_first:
            _add(tar, "metadata.txt", meta_bytes)
    data = buffer.getvalue()
    return gzip.compress(data) if compress else data


def hostile(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


def s3_entry(server: MotoServer, name: str, bucket: str, prefix: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "type": "s3",
        "endpoint": server.endpoint_url,
        "region": "us-east-1",
        "bucket": bucket,
        "prefix": prefix,
        "accessKeyID": "$AWS_ACCESS_KEY_ID",
        "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
    }


def bundle_config(server: MotoServer, s3: Any, tmp_path: Any, **workflow: Any) -> dict[str, Any]:
    """ingest.yaml: drop bucket -> archive bucket (prefix archive/), job store in tmp_path."""
    for bucket in (DROP_BUCKET, ARCHIVE_BUCKET):
        s3.create_bucket(Bucket=bucket)
    return {
        "sources": [s3_entry(server, "dropbox", DROP_BUCKET, "incoming/")],
        "destinations": [s3_entry(server, "archive", ARCHIVE_BUCKET, ARCHIVE_PREFIX)],
        "workflows": [
            {
                "name": "pacifica-bundles",
                "kind": "bundle",
                "source": "dropbox",
                "destinations": ["archive"],
                "interval": "30s",
                "jobs": f"sqlite:///{tmp_path}/jobs.db",
                **workflow,
            }
        ],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
    }


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    found: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(found)


# ---------------------------------------------------------------------- processes as users run them


def project_home(path: Path, instance_yaml: str | None = None) -> Path:
    """A DAGSTER_HOME holding the project's dagster.yaml (queued runs, run monitoring), or `instance_yaml`."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(instance_yaml if instance_yaml is not None else (REPO_ROOT / "dagster.yaml").read_text())
    return path


def get_state(url: str, job_id: int) -> dict[str, Any]:
    response = requests.get(f"{url}/get_state", params={"job_id": job_id}, timeout=10)
    response.raise_for_status()
    return response.json()


def answering(url: str) -> bool:
    try:
        return requests.get(f"{url}/get_state", params={"job_id": 0}, timeout=2).status_code == 404
    except requests.RequestException:
        return False


def run_worker_pid(instance: Any, run_id: str) -> int | None:
    """The pid of a run's worker process, from its "Started process for run (pid: N)" engine event."""
    import dagster as dg

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        pid = (data.metadata or {}).get("pid") if data else None
        value = str(getattr(pid, "value", pid)) if pid is not None else ""
        if value.isdigit():
            return int(value)
    return None
