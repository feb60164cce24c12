"""Staging and promotion in the archive: files wait under the staging prefix until the whole bundle is
verified, then move to `{job_id}/{subdir}/{name}`; on failure every staged (and promoted) object is removed."""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

from ingest_pipelines.storage import ObjectStore, StoreError
from ingest_pipelines.storage.filesystem import FilesystemStore
from ingest_pipelines.storage.s3 import S3Store


class ArchiveLayout:
    """Where a job's files live in the destination store (keys relative to the destination prefix)."""

    def __init__(self, job_id: int, staging_prefix: str = ".staging/"):
        self.job_id = job_id
        self.staging_root = f"{staging_prefix}{job_id}/"
        self.final_root = f"{job_id}/"

    def staging_key(self, path: str) -> str:
        return self.staging_root + path

    def final_key(self, path: str) -> str:
        return self.final_root + path


class StagingArea:
    """Objects written for one job; `promote` moves them to their final keys, `discard` removes everything.

    Small files are written by `threads` workers while the tar stream moves on (at most `threads` bodies
    in memory); large ones stream through boto3's multipart upload."""

    def __init__(self, store: ObjectStore, layout: ArchiveLayout, threads: int = 4):
        self.store = store
        self.layout = layout
        self.staged: dict[str, str] = {}  # path -> staging key
        self.promoted: list[str] = []
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bundle-staging")
        self._pending: list[Future[None]] = []

    def submit(self, path: str, data: bytes) -> str:
        """Write `data` in the background; blocks while `threads` writes are already in flight."""
        key = self.layout.staging_key(path)
        self.staged[path] = key
        while len(self._pending) >= self.threads:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self.store.put_bytes, key, data))
        return key

    def wait(self) -> None:
        """Every background write done; the first failure is raised."""
        pending, self._pending = self._pending, []
        errors = [future.exception() for future in pending]
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def upload(self, path: str, stream: BinaryIO) -> str:
        key = self.layout.staging_key(path)
        # recorded before the write so that a failed or partial upload is cleaned up too
        self.staged[path] = key
        self.store.upload_fileobj(key, stream)
        return key

    def put(self, path: str, data: bytes, content_type: str | None = None) -> str:
        key = self.layout.staging_key(path)
        self.staged[path] = key
        self.store.put_bytes(key, data, content_type=content_type)
        return key

    def promote(self, order: Iterable[str] | None = None) -> list[str]:
        """Move staged objects to the final prefix, concurrently; those named in `order` last, in that order."""
        self.wait()
        last = list(order or [])
        first = [p for p in self.staged if p not in last]
        self.promoted.extend(self.layout.final_key(p) for p in first)
        futures = [self._pool.submit(move_object, self.store, self.staged[p], self.layout.final_key(p)) for p in first]
        for future in futures:
            future.result()
        for path in last:
            if path in self.staged:
                self.promoted.append(self.layout.final_key(path))
                move_object(self.store, self.staged[path], self.layout.final_key(path))
        self.staged.clear()
        return list(self.promoted)

    def discard(self) -> list[str]:
        """Remove every staged and promoted object of this job; returns the keys that could not be removed."""
        left: list[str] = []
        try:
            self.wait()  # a write still in flight would land after the delete
        except Exception:
            pass
        for key in [*self.staged.values(), *self.promoted]:
            try:
                self.store.delete(key)
            except StoreError:
                left.append(key)
        self.staged.clear()
        self.promoted.clear()
        return left


def clear_job(store: ObjectStore, layout: ArchiveLayout) -> int:
    """Remove what an earlier, interrupted attempt of this job left (staging and final keys)."""
    return sum(delete_prefix(store, root) for root in (layout.staging_root, layout.final_root))


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


def move_object(store: ObjectStore, source_key: str, target_key: str) -> None:
    """Move one object inside a store: S3 server-side copy (multipart above 8 MiB) or a rename on disk."""
    if isinstance(store, S3Store):
        try:
            store.client.copy(
                {"Bucket": store.bucket, "Key": store.full_key(source_key)},
                store.bucket,
                store.full_key(target_key),
            )
        except Exception as exc:
            raise StoreError(f"{store.config.name}: moving {store.uri(source_key)} to {store.uri(target_key)} failed: {exc}") from exc
        store.delete(source_key)
        return
    if isinstance(store, FilesystemStore):
        source, target = store.path(source_key), store.path(target_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        store.delete(source_key)  # prunes the staging folders the move emptied
        return
    with store.open(source_key) as handle:
        store.upload_fileobj(target_key, handle)
    store.delete(source_key)
