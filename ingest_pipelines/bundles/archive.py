"""A job's folder in the archive: files are written once, straight to `{job_id}/{subdir}/{name}`, and
`metadata.json`, written last, is the commit marker. A job folder without metadata.json is incomplete.

On failure every object of the job is removed (metadata.json first, so that no reader ever sees a
committed folder with files missing); a retry first removes what an interrupted attempt left.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from ingest_pipelines.bundles.format import METADATA_JSON, BundleError, parse_metadata
from ingest_pipelines.storage import ObjectStore, StoreError
from ingest_pipelines.storage.s3 import S3Store


class ArchiveLayout:
    """Where a job's files live in the destination store (keys relative to the destination prefix).

    `staging_root` is where versions before write-once staged files; only removed now, never written."""

    def __init__(self, job_id: int, staging_prefix: str = ".staging/"):
        self.job_id = job_id
        self.staging_root = f"{staging_prefix}{job_id}/"
        self.final_root = f"{job_id}/"

    def final_key(self, path: str) -> str:
        return self.final_root + path

    @property
    def commit_key(self) -> str:
        """metadata.json: present only when every file of the job is in place."""
        return self.final_key(METADATA_JSON)


class ArchiveWriter:
    """Writes one job's files to their final keys; `commit` writes metadata.json after all of them,
    `discard` removes everything written.

    Small files are written by `threads` workers while the tar stream moves on (at most `threads` bodies
    in memory); large ones stream through boto3's multipart upload."""

    def __init__(self, store: ObjectStore, layout: ArchiveLayout, threads: int = 4):
        self.store = store
        self.layout = layout
        #: keys written or being written (recorded before the write, so a failed write is removed too)
        self.written: dict[str, str] = {}
        self.committed = False
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bundle-archive")
        self._pending: list[Future[None]] = []

    def key(self, path: str) -> str:
        return self.layout.final_key(path)

    def submit(self, path: str, data: bytes) -> str:
        """Write `data` in the background; blocks while `threads` writes are already in flight."""
        key = self._record(path)
        while len(self._pending) >= self.threads:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self.store.put_bytes, key, data))
        return key

    def upload(self, path: str, stream: BinaryIO) -> str:
        key = self._record(path)
        self.store.upload_fileobj(key, stream)
        return key

    def _record(self, path: str) -> str:
        if path == METADATA_JSON:
            # the commit marker's name is reserved: a data file of that name would commit a half-written folder
            raise BundleError("ingest files", f"data/{METADATA_JSON}: the name is reserved for the job's metadata")
        key = self.key(path)
        self.written[path] = key
        return key

    def wait(self) -> None:
        """Every background write done; the first failure is raised."""
        pending, self._pending = self._pending, []
        errors = [future.exception() for future in pending]
        for error in errors:
            if error is not None:
                raise error

    def commit(self, document: bytes) -> list[str]:
        """Write metadata.json once every file is written: from now on the job folder is complete."""
        self.wait()
        self.store.put_bytes(self.layout.commit_key, document, content_type="application/json")
        self.committed = True
        return [*self.written.values(), self.layout.commit_key]

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def discard(self) -> list[str]:
        """Remove every object of this job written so far (metadata.json first); returns the keys that could not be removed."""
        try:
            self.wait()  # a write still in flight would land after the delete
        except Exception:
            pass
        left: list[str] = []
        for key in [self.layout.commit_key, *self.written.values()]:
            try:
                self.store.delete(key)
            except StoreError:
                left.append(key)
        self.written.clear()
        self.committed = False
        return left


def clear_job(store: ObjectStore, layout: ArchiveLayout) -> int:
    """Remove what an earlier, interrupted attempt of this job left: metadata.json first (the folder stops
    being complete before any file goes), then the job folder, then what older versions staged."""
    committed = store.head(layout.commit_key) is not None
    if committed:
        store.delete(layout.commit_key)
    return int(committed) + sum(delete_prefix(store, root) for root in (layout.final_root, layout.staging_root))


def delete_prefix(store: ObjectStore, prefix: str) -> int:
    """Delete every object under `prefix` (a folder key ending in '/'); returns how many.

    On S3: 1000 keys per DeleteObjects call, and unfinished multipart uploads (a killed run's large member) aborted."""
    if not isinstance(store, S3Store):
        removed = 0
        for info in list(store.list(prefix)):
            store.delete(info.key)
            removed += 1
        return removed
    removed = 0
    full = store.full_key(prefix)
    try:
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=full):
            batch = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if batch:
                answer = store.client.delete_objects(Bucket=store.bucket, Delete={"Objects": batch, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StoreError(f"{store.config.name}: deleting {first.get('Key')} failed: {first.get('Message')}")
                removed += len(batch)
        for page in store.client.get_paginator("list_multipart_uploads").paginate(Bucket=store.bucket, Prefix=full):
            for upload in page.get("Uploads", []):
                store.client.abort_multipart_upload(Bucket=store.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{store.config.name}: deleting {store.uri(prefix)} failed: {exc}") from exc
    return removed


def archive_problems(archive: ObjectStore, layout: ArchiveLayout) -> dict[str, list[str]]:
    """Missing, unexpected and wrongly sized keys of a job's archive folder (relative to the job folder).

    Without metadata.json the folder is incomplete: metadata.json is missing and every file there is unexpected."""
    found = {info.key[len(layout.final_root) :]: info.size for info in archive.list(layout.final_root)}
    if METADATA_JSON not in found:
        return {"missing": [METADATA_JSON], "unexpected": sorted(found), "wrong_size": []}
    metadata = parse_metadata(archive.get_bytes(layout.commit_key))
    expected = {path: entry.size for path, entry in metadata.files.items()}
    expected[METADATA_JSON] = found[METADATA_JSON]
    return {
        "missing": sorted(set(expected) - set(found)),
        "unexpected": sorted(set(found) - set(expected)),
        "wrong_size": sorted(path for path in set(found) & set(expected) if found[path] != expected[path]),
    }
