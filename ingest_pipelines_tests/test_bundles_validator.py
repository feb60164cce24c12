"""Bundle validation and ingest against the moto S3 server: every rejection Pacifica names, member safety,
no half ingests, gzip, metadata.txt anywhere in the tar, policy/metadata services, limits and POST /move documents."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from ingest_pipelines.bundles.config import parse_size
from ingest_pipelines.bundles.format import BundleError, parse_metadata
from ingest_pipelines.bundles.ingest import MOVE_SUFFIX, resolve_move_source, run_job
from ingest_pipelines.bundles.jobs import JobStore
from ingest_pipelines.config import parse_config
from ingest_pipelines.storage import open_store
from ingest_pipelines.testing.http_server import Response
from ingest_pipelines_tests.bundle_fixtures import (
    ARCHIVE_BUCKET,
    ARCHIVE_PREFIX,
    DROP_BUCKET,
    SAMPLE_FILES,
    build_tar,
    bundle_config,
    file_entries,
    hostile,
    keys,
)


class Harness:
    """One bundle workflow on the moto server: drop a tar, run its job, look at the archive."""

    def __init__(self, server: Any, s3: Any, tmp_path: Path, **workflow: Any):
        self.s3 = s3
        self.config = parse_config(bundle_config(server, s3, tmp_path, **workflow))
        self.workflow = self.config.workflows[0]
        self.jobs = JobStore(self.workflow.jobs_url(self.config))
        self.source = open_store(self.config.source("dropbox"))
        self.archive = open_store(self.config.destination("archive"))

    def run(self, tar: bytes, key: str = "bundle.tar") -> Any:
        self.source.put_bytes(key, tar)
        job = self.jobs.create(self.workflow.name, key, self.source.head(key).etag)
        self.job_id = job.job_id
        return run_job(self.workflow, self.jobs, job.job_id, self.source, self.archive)

    def fail(self, tar: bytes, task: str, match: str, key: str = "bundle.tar") -> Any:
        with pytest.raises(BundleError, match=match) as info:
            self.run(tar, key)
        assert info.value.task == task
        job = self.jobs.get(self.job_id)
        assert (job.state, job.task, job.complete) == ("FAILED", task, True)
        assert match.replace("\\", "") in job.exception or info.value.message == job.exception
        # no half ingests: nothing at the final or the staging prefix
        archived = keys(self.s3, ARCHIVE_BUCKET)
        assert [k for k in archived if k.startswith((f"{ARCHIVE_PREFIX}{self.job_id}/", f"{ARCHIVE_PREFIX}.staging/"))] == []
        assert all(k.startswith(ARCHIVE_PREFIX) for k in archived)
        return job


@pytest.fixture
def harness(s3_server, s3, tmp_path) -> Harness:
    return Harness(s3_server, s3, tmp_path)


def _archived(s3: Any, job_id: int) -> dict[str, bytes]:
    prefix = f"{ARCHIVE_PREFIX}{job_id}/"
    return {key[len(prefix) :]: s3.get_object(Bucket=ARCHIVE_BUCKET, Key=key)["Body"].read() for key in keys(s3, ARCHIVE_BUCKET, prefix)}


@pytest.mark.parametrize(("metadata_first", "compress"), [(True, False), (False, True)])
def test_good_bundle_lands_at_the_final_prefix(harness: Harness, metadata_first: bool, compress: bool) -> None:
    outcome = harness.run(build_tar(metadata_first=metadata_first, compress=compress), "b.tar.gz" if compress else "b.tar")
    job = harness.jobs.get(harness.job_id)
    assert (job.state, job.task, job.task_percent, job.complete, job.exception) == ("OK", "ingest metadata", 100.0, True, "")
    archived = _archived(harness.s3, harness.job_id)
    assert {path: data for path, data in archived.items() if path != "metadata.json"} == SAMPLE_FILES
    assert json.loads(archived["metadata.json"]) == file_entries(SAMPLE_FILES)
    assert keys(harness.s3, ARCHIVE_BUCKET) == sorted(f"{ARCHIVE_PREFIX}{harness.job_id}/{p}" for p in archived)
    assert outcome.result.files == len(SAMPLE_FILES) and outcome.result.bytes == sum(map(len, SAMPLE_FILES.values()))


@pytest.mark.parametrize("hashtype", ["sha256", "blake2b"])
def test_any_hashlib_name_and_sha_prefix(harness: Harness, hashtype: str) -> None:
    # metadata last with a hash the validator did not compute speculatively: verified by re-reading staging
    harness.run(build_tar(metadata=file_entries(SAMPLE_FILES, hashtype, prefixed=True), metadata_first=False))
    assert harness.jobs.get(harness.job_id).state == "OK"
    harness.run(build_tar(metadata=file_entries(SAMPLE_FILES, "sha1", prefixed=True)))
    assert harness.jobs.get(harness.job_id).state == "OK"


@pytest.mark.parametrize("metadata_first", [True, False])
def test_wrong_hashsum_fails_at_ingest_files_and_leaves_nothing(harness: Harness, metadata_first: bool) -> None:
    entries = file_entries(SAMPLE_FILES)
    entries[2]["hashsum"] = "0" * 40
    job = harness.fail(build_tar(metadata=entries, metadata_first=metadata_first), "ingest files", "sha1 mismatch")
    assert "results.csv" in job.exception


def test_size_mismatch_fails_at_ingest_files(harness: Harness) -> None:
    entries = file_entries(SAMPLE_FILES)
    entries[1]["size"] += 1
    harness.fail(build_tar(metadata=entries), "ingest files", "size mismatch")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"destinationTable": "Files"}', "must be a JSON list"),
        (b'[{"destinationTable": "Files", "name": "a"}]', "missing 'size'"),
        (b'[{"destinationTable": "Files", "name": "a", "size": 1, "hashsum": "x", "hashtype": "nohash"}]', "unknown hashtype"),
        (b'[{"destinationTable": "Files", "name": "a", "size": 1, "hashsum": "x", "hashtype": "shake_128"}]', "unsupported hashtype"),
    ],
)
def test_bad_metadata_fails_at_load_metadata(harness: Harness, raw: bytes, match: str) -> None:
    harness.fail(build_tar(raw_metadata=raw), "load metadata", match)


def test_missing_metadata_fails_at_load_metadata(harness: Harness) -> None:
    import io

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("data/a.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"a"))
    harness.fail(buffer.getvalue(), "load metadata", "metadata.txt is missing")


@pytest.mark.parametrize("data", [b"this is not a tar file at all" * 30, b"", b"\x1f\x8b\x08\x00garbage"])
def test_not_a_tar_fails_at_open_tar(harness: Harness, data: bytes) -> None:
    harness.fail(data, "open tar", "Failed to open tarfile.")


def test_truncated_tar_is_rejected(harness: Harness) -> None:
    tar = build_tar({"big.bin": b"z" * 100_000})
    harness.fail(tar[:60_000], "ingest files", "truncated or corrupt")


def test_truncated_gzip_inside_metadata_txt_is_a_bundle_error(harness: Harness) -> None:
    # metadata.txt last, the gzip stream cut inside it: a rejection at "load metadata", not a ReadError
    tar = build_tar(compress=True, metadata_first=False)
    harness.fail(tar[: len(tar) // 2], "load metadata", "metadata.txt: bundle is truncated or corrupt")


def test_truncated_large_member_streamed_to_s3_is_rejected(harness: Harness) -> None:
    # above SMALL_MEMBER the member streams through boto3's multipart upload, which must not hide the tar error
    tar = build_tar({"big.bin": b"z" * (9 * 1024 * 1024)}, compress=True)
    harness.fail(tar[: len(tar) * 3 // 4], "ingest files", "truncated or corrupt")


def test_listed_file_missing_from_the_tar(harness: Harness) -> None:
    entries = file_entries({**SAMPLE_FILES, "extra/listed.txt": b"listed"})
    harness.fail(build_tar(metadata=entries), "ingest files", "missing from the bundle: data/extra/listed.txt")


@pytest.mark.parametrize("metadata_first", [True, False])
def test_unlisted_data_file(harness: Harness, metadata_first: bool) -> None:
    entries = file_entries({k: v for k, v in SAMPLE_FILES.items() if k != "empty.txt"})
    harness.fail(build_tar(metadata=entries, metadata_first=metadata_first), "ingest files", "data/empty.txt: not listed")


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (hostile("../x"), "path leaves the bundle"),
        (hostile("data/../../x"), "path leaves the bundle"),
        (hostile("/etc/x"), "absolute path"),
        (hostile("data/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (hostile("data/hard", tarfile.LNKTYPE, "data/empty.txt"), "hard link"),
        (hostile("data/dev", tarfile.CHRTYPE), "device or FIFO"),
        (hostile("data/blk", tarfile.BLKTYPE), "device or FIFO"),
        (hostile("data/fifo", tarfile.FIFOTYPE), "device or FIFO"),
        (hostile("notes.txt"), "holds metadata.txt and data/ only"),
    ],
)
def test_unsafe_members_are_rejected_and_nothing_is_written(harness: Harness, member: tarfile.TarInfo, match: str, tmp_path: Path) -> None:
    harness.fail(build_tar(extra=[member]), "ingest files", match)
    # nothing outside the destination either: the drop bucket holds only the bundle, the test folder no x
    assert keys(harness.s3, DROP_BUCKET) == ["incoming/bundle.tar"]
    assert not (tmp_path.parent / "x").exists() and not Path("x").exists()


def test_member_count_and_total_size_limits(s3_server, s3, tmp_path) -> None:
    harness = Harness(s3_server, s3, tmp_path, maxMembers=3, maxTotalSize="1KiB")
    harness.fail(build_tar({name: b"x" for name in "abcd"}), "ingest files", "more than maxMembers=3")
    small = {"a.txt": b"a" * 600, "b.txt": b"b" * 600}
    # metadata first: its listed total is refused before any byte is staged
    harness.fail(build_tar(small), "load metadata", "more than maxTotalSize=1024")
    harness.fail(build_tar(small, metadata_first=False), "ingest files", "exceeds maxTotalSize=1024")
    assert parse_size("10GiB") == 10 * 2**30 and parse_size("500MB") == 500 * 10**6 and parse_size(7) == 7


def test_policy_accepts_rejects_or_is_down(s3_server, s3, tmp_path, http_server) -> None:
    verdict = {"status": "success"}
    policy = http_server(lambda request: Response(200 if verdict["status"] == "success" else 412, dict(verdict)))
    harness = Harness(s3_server, s3, tmp_path, policy={"url": f"{policy.url}/ingest", "timeout": "5s"})
    harness.run(build_tar())
    assert harness.jobs.get(harness.job_id).state == "OK"
    assert policy.requests[-1].method == "POST" and policy.requests[-1].json() == file_entries(SAMPLE_FILES)
    verdict.update(status="error", message="proposal 1234 is closed")
    job = harness.fail(build_tar(), "Policy Validation", "rejected the bundle")
    assert "proposal 1234 is closed" in job.exception
    # metadata last: files were staged before the policy answered, and are removed
    harness.fail(build_tar(metadata_first=False), "Policy Validation", "rejected the bundle")
    policy.stop()
    harness.fail(build_tar(), "Policy Validation", "unreachable")


def test_metadata_service_must_accept(s3_server, s3, tmp_path, http_server) -> None:
    answers = [{"status": "success"}, {"status": "error", "message": "db down"}]
    service = http_server(lambda request: Response(200, answers.pop(0)))
    harness = Harness(s3_server, s3, tmp_path, metadataService={"url": service.url + "/ingest"})
    harness.run(build_tar())
    assert service.requests[0].method == "PUT" and service.requests[0].query == {"job_id": [str(harness.job_id)]}
    first = harness.job_id
    harness.s3.delete_objects(Bucket=ARCHIVE_BUCKET, Delete={"Objects": [{"Key": k} for k in keys(s3, ARCHIVE_BUCKET)]})
    job = harness.fail(build_tar(), "ingest metadata", "refused the metadata")
    assert "db down" in job.exception and first != harness.job_id


def test_retry_of_a_job_replaces_what_an_interrupted_attempt_left(harness: Harness) -> None:
    harness.run(build_tar())
    job_id = harness.job_id
    # an interrupted earlier attempt: a stray staged file and a stray final file
    harness.archive.put_bytes(f".staging/{job_id}/stray", b"x")
    harness.archive.put_bytes(f"{job_id}/stray", b"x")
    harness.jobs.update(job_id, task="ingest files", task_percent=50)
    run_job(harness.workflow, harness.jobs, job_id, harness.source, harness.archive)
    assert "stray" not in _archived(harness.s3, job_id) and keys(harness.s3, ARCHIVE_BUCKET, ARCHIVE_PREFIX + ".staging/") == []
    # a complete job is not redone
    assert run_job(harness.workflow, harness.jobs, job_id, harness.source, harness.archive).skipped


def test_a_job_failed_by_an_administrator_while_its_run_waited_stays_failed(harness: Harness) -> None:
    from datetime import UTC, timedelta

    key = "bundle.tar"
    harness.source.put_bytes(key, build_tar())
    job = harness.jobs.create(harness.workflow.name, key, harness.source.head(key).etag)
    failed = harness.jobs.fail(job.job_id, "open tar", "Failed by administrator")
    # the run was queued before the administrator's change: it leaves the job alone (it used to ingest and set OK)
    queued = failed.updated.replace(tzinfo=UTC) - timedelta(seconds=1)
    with pytest.raises(BundleError, match="was set FAILED after this run was queued"):
        run_job(harness.workflow, harness.jobs, job.job_id, harness.source, harness.archive, run_created=queued)
    after = harness.jobs.get(job.job_id)
    assert (after.state, after.exception) == ("FAILED", "Failed by administrator") and keys(harness.s3, ARCHIVE_BUCKET) == []
    # a run queued after the failure (a retry from the UI) ingests it
    retry = failed.updated.replace(tzinfo=UTC) + timedelta(seconds=1)
    run_job(harness.workflow, harness.jobs, job.job_id, harness.source, harness.archive, run_created=retry)
    assert harness.jobs.get(job.job_id).state == "OK"


def test_clean_up_deletes_the_drop_object_after_success(s3_server, s3, tmp_path) -> None:
    harness = Harness(s3_server, s3, tmp_path, cleanUp=True)
    harness.run(build_tar())
    assert keys(s3, DROP_BUCKET) == []


def test_move_document_copies_verifies_and_removes_originals(harness: Harness) -> None:
    files = {"run1/a.dat": b"a" * 1000, "b.dat": b"b" * 10}
    entries = file_entries(files)
    for entry, (path, data) in zip(entries[1:], files.items(), strict=True):
        harness.source.put_bytes(f"staged-by-instrument/{path}", data)
        entry["source"] = f"s3://{DROP_BUCKET}/incoming/staged-by-instrument/{path}" if path == "b.dat" else f"staged-by-instrument/{path}"
    harness.run(json.dumps(entries).encode(), key=f"uploads/1{MOVE_SUFFIX}")
    archived = _archived(harness.s3, harness.job_id)
    assert archived["run1/a.dat"] == files["run1/a.dat"] and archived["b.dat"] == files["b.dat"]
    assert keys(harness.s3, DROP_BUCKET) == [f"incoming/uploads/1{MOVE_SUFFIX}"]
    # a wrong hash: nothing archived and the original stays where it was
    harness.source.put_bytes("staged-by-instrument/c.dat", b"c")
    bad = file_entries({"c.dat": b"not c"})
    bad[1]["source"] = "staged-by-instrument/c.dat"
    bad[1]["size"] = 1
    with pytest.raises(BundleError, match="sha1 mismatch") as info:
        harness.run(json.dumps(bad).encode(), key=f"uploads/2{MOVE_SUFFIX}")
    assert info.value.task == "move files"
    assert harness.source.head("staged-by-instrument/c.dat") is not None
    assert not any(key.startswith(f"{ARCHIVE_PREFIX}{harness.job_id}/") for key in keys(harness.s3, ARCHIVE_BUCKET))


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("odd dir/a #1?.dat", "odd dir/a #1?.dat"),
        (f"s3://{DROP_BUCKET}/incoming/odd dir/a #1?.dat", "odd dir/a #1?.dat"),  # was cut at '#': 'odd dir/a '
        (f"s3://{DROP_BUCKET}/incoming/x%20y.dat", "x%20y.dat"),
        ("run:7/a.dat", "run:7/a.dat"),  # was refused as scheme 'run'
        ("ünï/ç.dat", "ünï/ç.dat"),
    ],
)
def test_move_sources_with_odd_characters_name_the_right_key(harness: Harness, source: str, key: str) -> None:
    assert resolve_move_source(harness.source, source) == key


@pytest.mark.parametrize("source", ["s3://other-bucket/x", "../outside", "/etc/passwd", "file:///etc/passwd", "http://x/y", "S3://other/x"])
def test_move_sources_outside_the_drop_location_are_refused(harness: Harness, source: str) -> None:
    with pytest.raises(BundleError, match="outside the drop location|unsupported scheme"):
        resolve_move_source(harness.source, source)


def test_metadata_parsing_rules() -> None:
    data = b"hello"
    entry = {"destinationTable": "Files", "name": "a.txt", "subdir": "x/y/", "size": 5, "hashtype": "SHA1"}
    entry["hashsum"] = "sha1:" + hashlib.sha1(data).hexdigest().upper()
    parsed = parse_metadata(json.dumps([entry, {"destinationTable": "TransactionKeyValue", "key": "k"}]))
    assert list(parsed.files) == ["x/y/a.txt"] and parsed.files["x/y/a.txt"].hashsum == hashlib.sha1(data).hexdigest()
    for bad in ({**entry, "subdir": "../up"}, {**entry, "name": "/abs"}, {**entry, "size": -1}):
        with pytest.raises(BundleError):
            parse_metadata(json.dumps([bad]))
    with pytest.raises(BundleError, match="listed twice"):
        parse_metadata(json.dumps([entry, entry]))


def test_filesystem_drop_folder_and_archive(tmp_path: Path) -> None:
    from ingest_pipelines.bundles.jobs import JobStore as Store

    config = parse_config(
        {
            "sources": [{"name": "dropbox", "type": "filesystem", "path": str(tmp_path / "drop")}],
            "destinations": [{"name": "archive", "type": "filesystem", "path": str(tmp_path / "archive"), "prefix": "a/"}],
            "workflows": [{"name": "fs", "kind": "bundle", "source": "dropbox", "destinations": ["archive"]}],
            "state": {"type": "filesystem", "path": str(tmp_path / "state")},
        }
    )
    workflow = config.workflows[0]
    jobs = Store(workflow.jobs_url(config))
    assert workflow.jobs_url(config) == f"sqlite:///{tmp_path / 'state' / 'bundle-jobs.db'}"
    source, archive = open_store(config.source("dropbox")), open_store(config.destination("archive"))
    source.put_bytes("b.tar", build_tar(metadata_first=False))
    job = jobs.create("fs", "b.tar", source.head("b.tar").etag)
    run_job(workflow, jobs, job.job_id, source, archive)
    root = tmp_path / "archive" / "a"
    found = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert found == sorted(f"{job.job_id}/{p}" for p in [*SAMPLE_FILES, "metadata.json"])
    assert (root / f"{job.job_id}/mywork/experiment/results.csv").read_bytes() == SAMPLE_FILES["mywork/experiment/results.csv"]
    source.put_bytes("c.tar", build_tar(extra=[hostile("../../escape")]))
    bad = jobs.create("fs", "c.tar", source.head("c.tar").etag)
    with pytest.raises(BundleError, match="path leaves the bundle"):
        run_job(workflow, jobs, bad.job_id, source, archive)
    assert not (tmp_path / "escape").exists() and not (root / str(bad.job_id)).exists() and not (root / ".staging").exists()
