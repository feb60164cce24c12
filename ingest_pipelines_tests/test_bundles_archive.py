"""The archive folder of a job against the moto S3 server: each file written once to its final key (no copy,
no delete), metadata.json written last as the commit marker, removal with metadata.json first, and a retry
that finds a committed folder completing the job without ingesting again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest_pipelines.bundles.archive import ArchiveLayout, archive_problems, clear_job
from ingest_pipelines.bundles.format import BundleError
from ingest_pipelines.bundles.ingest import run_job
from ingest_pipelines.bundles.jobs import JobStore
from ingest_pipelines.config import parse_config
from ingest_pipelines.storage import open_store
from ingest_pipelines_tests.bundle_fixtures import (
    ARCHIVE_BUCKET,
    ARCHIVE_PREFIX,
    SAMPLE_FILES,
    build_tar,
    bundle_config,
    file_entries,
    keys,
)


class RecordingStore:
    """The archive store, with every write and delete it is asked for recorded in order (calls go through)."""

    def __init__(self, store: Any):
        self.store = store
        self.config = store.config
        self.calls: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> None:
        self.store.put_bytes(key, data, **kwargs)
        self.calls.append(("put", key))

    def upload_fileobj(self, key: str, fileobj: Any, **kwargs: Any) -> None:
        self.store.upload_fileobj(key, fileobj, **kwargs)
        self.calls.append(("put", key))

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.store.delete(key)


@pytest.fixture
def env(s3_server, s3, tmp_path: Path) -> dict[str, Any]:
    config = parse_config(bundle_config(s3_server, s3, tmp_path))
    workflow = config.workflows[0]
    return {
        "workflow": workflow,
        "jobs": JobStore(workflow.jobs_url(config)),
        "source": open_store(config.source("dropbox")),
        "archive": open_store(config.destination("archive")),
        "s3": s3,
    }


def _job(env: dict[str, Any], tar: bytes) -> int:
    env["source"].put_bytes("b.tar", tar)
    return env["jobs"].create(env["workflow"].name, "b.tar", env["source"].head("b.tar").etag).job_id


@pytest.mark.parametrize("metadata_first", [True, False])
def test_each_file_is_written_once_to_its_final_key_and_metadata_json_last(env: dict[str, Any], metadata_first: bool) -> None:
    files = {**SAMPLE_FILES, "big/large.bin": b"L" * (9 * 1024 * 1024)}  # above SMALL_MEMBER: a streamed multipart upload
    job_id = _job(env, build_tar(files, metadata_first=metadata_first))
    archive = RecordingStore(env["archive"])
    run_job(env["workflow"], env["jobs"], job_id, env["source"], archive)
    writes = [key for op, key in archive.calls if op == "put"]
    assert sorted(writes) == sorted(f"{job_id}/{path}" for path in [*files, "metadata.json"])
    assert writes[-1] == f"{job_id}/metadata.json"
    # nothing else: no staging copy, no server-side copy, no delete of a staged file
    assert [call for call in archive.calls if call[0] == "delete"] == []
    assert keys(env["s3"], ARCHIVE_BUCKET) == sorted(ARCHIVE_PREFIX + key for key in writes)


def test_a_rejected_bundle_leaves_no_file_and_no_metadata_json(env: dict[str, Any]) -> None:
    entries = file_entries(SAMPLE_FILES)
    entries[-1]["hashsum"] = "0" * 40  # the last file is wrong: the others were already written
    job_id = _job(env, build_tar(metadata=entries, metadata_first=False))
    archive = RecordingStore(env["archive"])
    with pytest.raises(BundleError, match="sha1 mismatch"):
        run_job(env["workflow"], env["jobs"], job_id, env["source"], archive)
    assert ("put", f"{job_id}/metadata.json") not in archive.calls
    assert keys(env["s3"], ARCHIVE_BUCKET) == []


def test_a_data_file_named_like_the_commit_marker_is_refused(env: dict[str, Any]) -> None:
    files = {"metadata.json": b"{}", "a.txt": b"a"}
    for metadata_first in (True, False):
        job_id = _job(env, build_tar(files, metadata_first=metadata_first))
        with pytest.raises(BundleError, match="reserved"):
            run_job(env["workflow"], env["jobs"], job_id, env["source"], env["archive"])
        assert env["jobs"].get(job_id).state == "FAILED"
    assert keys(env["s3"], ARCHIVE_BUCKET) == []


def test_clear_job_removes_metadata_json_before_any_file(env: dict[str, Any]) -> None:
    archive = RecordingStore(env["archive"])
    for key in ("7/a.txt", "7/sub/b.txt", "7/metadata.json", ".staging/7/old.txt", "70/other-job.txt"):
        env["archive"].put_bytes(key, b"x")
    env["s3"].create_multipart_upload(Bucket=ARCHIVE_BUCKET, Key=f"{ARCHIVE_PREFIX}7/big.bin")
    assert clear_job(archive, ArchiveLayout(7)) == 4
    assert archive.calls[0] == ("delete", "7/metadata.json")
    assert keys(env["s3"], ARCHIVE_BUCKET) == [f"{ARCHIVE_PREFIX}70/other-job.txt"]
    # on S3 (the store itself, not the recording wrapper) a killed run's unfinished multipart upload is aborted too
    clear_job(env["archive"], ArchiveLayout(7))
    assert env["s3"].list_multipart_uploads(Bucket=ARCHIVE_BUCKET).get("Uploads", []) == []


def test_a_folder_without_metadata_json_is_incomplete(env: dict[str, Any]) -> None:
    env["archive"].put_bytes("8/a.txt", b"a")
    assert archive_problems(env["archive"], ArchiveLayout(8)) == {"missing": ["metadata.json"], "unexpected": ["a.txt"], "wrong_size": []}


def test_a_retry_that_finds_the_folder_committed_completes_the_job_without_ingesting(env: dict[str, Any]) -> None:
    job_id = _job(env, build_tar())
    run_job(env["workflow"], env["jobs"], job_id, env["source"], env["archive"])
    # the earlier attempt was killed after writing metadata.json and before the job said "complete"
    env["jobs"].update(job_id, task="ingest metadata", task_percent=0.0)
    archive = RecordingStore(env["archive"])
    outcome = run_job(env["workflow"], env["jobs"], job_id, env["source"], archive)
    assert outcome.skipped and [op for op, _ in archive.calls] == []
    job = env["jobs"].get(job_id)
    assert (job.state, job.task, job.complete) == ("OK", "ingest metadata", True)
    # a folder missing a file is not committed work: the retry clears it (metadata.json first) and ingests again
    env["jobs"].update(job_id, task="ingest metadata", task_percent=0.0)
    env["archive"].delete(f"{job_id}/empty.txt")
    outcome = run_job(env["workflow"], env["jobs"], job_id, env["source"], archive)
    assert not outcome.skipped and archive.calls[0] == ("delete", f"{job_id}/metadata.json")
    assert json.loads(env["archive"].get_bytes(f"{job_id}/metadata.json")) == file_entries(SAMPLE_FILES)
    assert not any(archive_problems(env["archive"], ArchiveLayout(job_id)).values())
