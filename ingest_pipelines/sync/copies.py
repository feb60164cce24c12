"""Copies into object destinations (s3, filesystem): what a destination already holds (one range listing
per group of batches instead of a HEAD per key), and one change applied to one destination.

A destination that holds the object (same ETag, or same size and mtime in a folder) is not written again.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ingest_pipelines.storage import ObjectInfo, ObjectStore, StoreError
from ingest_pipelines.storage.filesystem import is_folder_key
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.destinations import Destination, client_error_code, etags_comparable, range_listing
from ingest_pipelines.sync.ledger import SyncLedger

log = logging.getLogger(__name__)

#: CopyObject's limit; bigger objects are copied part by part (UploadPartCopy).
MAX_SINGLE_COPY = 5 * 1024**3
#: a temp file untouched this long belongs to a writer that died (an active writer keeps its mtime fresh).
STALE_TEMP_SECONDS = 60.0


class SourceChanged(Exception):
    """The source no longer holds this version (412: "superseded") or the object at all (404: "source-missing")."""

    def __init__(self, kind: str):
        self.kind = kind


class Outcome:
    """What one (change, destination) task did."""

    __slots__ = ("change", "dest", "kind", "error", "uri", "size", "seen")

    def __init__(
        self,
        change: Change,
        dest: Destination,
        kind: str,
        uri: str | None = None,
        error: str | None = None,
        size: int = 0,
        seen: tuple[int, str] | None | bool = False,
    ):
        self.change, self.dest, self.kind, self.uri, self.error, self.size = change, dest, kind, uri, error, size
        #: what the destination was seen to hold: (size, etag), None = gone, False = not seen
        self.seen = seen


@dataclass
class Held:
    """What a destination holds for one key: marker (None = not looked up) and object (if `looked`)."""

    marker: bool | None = None
    info: ObjectInfo | None = None
    looked: bool = False


def open_version(source: ObjectStore, change: Change) -> tuple[Any, str | None, dict[str, str] | None]:
    """A stream of the change's version of the source object, with its content type and user metadata.
    Raises SourceChanged when the source no longer has that version."""
    src: Any = source
    if not hasattr(src, "client"):
        try:
            if hasattr(src, "open_element"):  # a plugin source knows each element's content type
                return src.open_element(change.key, change.version)
            return src.open(change.key), mimetypes.guess_type(change.key)[0], None
        except StoreError as exc:  # a plugin says which (ElementNotFound / ElementChanged)
            raise SourceChanged(getattr(exc, "sync_kind", "source-missing")) from exc
    kwargs: dict[str, Any] = {"Bucket": src.bucket, "Key": src.full_key(change.key)}
    if change.version_id and change.version_id != "null":
        kwargs["VersionId"] = change.version_id
    elif change.etag:
        kwargs["IfMatch"] = change.etag
    try:
        resp = src.client.get_object(**kwargs)
    except ClientError as exc:
        raise _source_changed(exc) from exc
    return resp["Body"], resp.get("ContentType"), dict(resp.get("Metadata") or {})


def _source_changed(exc: ClientError) -> Exception:
    code = client_error_code(exc)
    if code in ("PreconditionFailed", "412"):
        return SourceChanged("superseded")
    if code in ("NoSuchKey", "404", "NoSuchVersion"):
        return SourceChanged("source-missing")
    return exc


class ObjectCopier:
    """Applies changes to the object destinations of one workflow; safe to call again for the same change."""

    def __init__(self, workflow: str, source: ObjectStore, ledger: SyncLedger):
        self.workflow = workflow
        self.source = source
        self.ledger = ledger
        self._server_side: dict[str, bool] = {}

    # ------------------------------------------------------------------ presence

    def presence(self, dest: Destination, changes: list[Change]) -> dict[str, Held] | None:
        """What the destination already holds for these keys, from one range listing (objects and
        markers) instead of a HEAD per key. None: listing costs more than HEADs (or not a bucket)."""
        if not changes or not dest.is_bucket:
            return None
        keys = sorted(c.key for c in changes)
        objects = range_listing(dest.store, [dest.full_key(k) for k in keys])
        if objects is None:
            return None
        markers: dict[str, dict[str, Any]] | None = {}
        if dest.markers:
            markers = range_listing(dest.store, [dest.marker_key(k) for k in keys])
            if markers is None:
                return None
        out: dict[str, Held] = {}
        for key in keys:
            item = objects.get(dest.full_key(key))
            info = (
                None
                if item is None
                else ObjectInfo(key, int(item.get("Size", 0)), str(item.get("ETag", "")).strip('"'), item["LastModified"])
            )
            out[key] = Held(marker=dest.marker_key(key) in (markers or {}) if dest.markers else False, info=info, looked=True)
        return out

    # ------------------------------------------------------------------ one change

    def apply_one(self, change: Change, dest: Destination, held: Held | None) -> Outcome:
        held = held or Held()
        uri = dest.store.uri(change.key)
        try:
            if change.operation == "delete":
                if dest.deletes:
                    dest.store.delete(change.key)
                    if dest.markers:
                        dest.delete_marker(change.key)
                    return Outcome(change, dest, "deleted", seen=None if dest.is_bucket else False)
                return Outcome(change, dest, "delete-ignored")
            if dest.markers and held.marker is None:
                held.marker = dest.marker_exists(change.key)
            if held.marker and change.operation in ("snapshot", "create"):
                # connylabs: the marker says "delivered" (the consumer may have moved the object
                # away since); an update is a new version and is delivered again
                return Outcome(change, dest, "present", uri=uri)
            if not held.looked:
                held.info = self._head(dest, change)
            if held.info is not None and self._holds(dest, held.info, change):
                seen = (held.info.size, held.info.etag) if dest.is_bucket else False
                if dest.markers and not held.marker:
                    dest.put_marker(change.key)
                    return Outcome(change, dest, "marker-only", uri=uri, seen=seen)
                return Outcome(change, dest, "present", uri=uri, seen=seen)
            copied_etag = self._copy(change, dest)
            if dest.markers and not held.marker:
                dest.put_marker(change.key)
            seen = (change.size, copied_etag) if copied_etag else False
            return Outcome(change, dest, "copied", uri=uri, size=change.size, seen=seen)
        except SourceChanged as exc:
            return Outcome(change, dest, exc.kind)
        except Exception as exc:  # recorded per change; the rest of the batch goes on
            log.warning("%s: %s -> %s failed: %s", self.workflow, change.key, dest.name, exc)
            return Outcome(change, dest, "failed", error=f"{type(exc).__name__}: {exc}")

    def _head(self, dest: Destination, change: Change) -> ObjectInfo | None:
        holds = getattr(dest.store, "holds_version", None)
        if holds is not None:  # a plugin destination answers for one version (plugins/adapters.py)
            held = holds(change.key, change.version)
            return ObjectInfo(change.key, change.size, change.etag, datetime.fromtimestamp(change.changed_at, tz=UTC)) if held else None
        if dest.is_folder:
            if is_folder_key(change.key):
                return dest.store.head(change.key)
            path = dest.store.path(change.key)  # type: ignore[attr-defined]
            if not path.is_file():
                return None
            stat = path.stat()
            return ObjectInfo(change.key, stat.st_size, "", datetime.fromtimestamp(stat.st_mtime, tz=UTC))
        return dest.store.head(change.key)

    def _holds(self, dest: Destination, info: ObjectInfo, change: Change) -> bool:
        """Same object: the S3 ETag matches; in a folder, same size and the mtime we set to LastModified.
        ETags of different forms (a multipart upload's `md5-N` vs a single PUT's MD5, as a streamed copy
        of a large object produces) cannot be compared: then the ledger says whether this version was
        written here (without it, the object is copied again rather than wrongly taken as present)."""
        if getattr(dest.store, "holds_version", None) is not None:
            return True  # `_head` asked the plugin destination for this very version
        if getattr(self.source, "opaque_versions", False):
            # a plugin source's version is the API's, not a content hash, and its size may be unknown (0)
            same_size = not change.size or info.size == change.size
            return same_size and (change.key, change.version) in self.ledger.applied_versions(self.workflow, dest.name, [change.key])
        if dest.is_folder:
            return info.size == change.size and abs(_unix(info.last_modified) - change.changed_at) < 1.0
        if info.size != change.size:
            return False
        if info.etag == change.etag:
            return True
        if etags_comparable(info.etag, change.etag):
            return False
        return (change.key, change.version) in self.ledger.applied_versions(self.workflow, dest.name, [change.key])

    def _copy(self, change: Change, dest: Destination) -> str | None:
        """Copy one object; returns the ETag the destination answered with (server-side copies), else None."""
        if self._server_side.setdefault(dest.name, same_endpoint(self.source, dest)):
            try:
                return self._server_side_copy(change, dest)
            except ClientError as exc:
                changed = _source_changed(exc)
                if changed is not exc:
                    raise changed from exc
                if client_error_code(exc) not in ("AccessDenied", "403"):
                    raise
                self._server_side[dest.name] = False  # the destination's credentials cannot read the source
        body, content_type, metadata = open_version(self.source, change)
        store_version = getattr(dest.store, "store_version", None)
        try:
            if store_version is not None:  # a plugin destination stores an element at a version
                store_version(change.key, change.version, body, content_type=content_type, metadata=metadata, size=change.size)
            else:
                dest.store.upload_fileobj(change.key, body, content_type=content_type, metadata=metadata)
        finally:
            body.close()
        if dest.is_folder:
            # the object's LastModified as mtime: a later run recognises the file as this version
            os.utime(dest.store.path(change.key), (change.changed_at, change.changed_at))  # type: ignore[attr-defined]
        return None

    def _server_side_copy(self, change: Change, dest: Destination) -> str | None:
        src: Any = self.source
        client = dest.store.client  # type: ignore[attr-defined]
        copy_source: dict[str, str] = {"Bucket": src.bucket, "Key": src.full_key(change.key)}
        if change.version_id and change.version_id != "null":
            copy_source["VersionId"] = change.version_id
        target = {"Bucket": dest.store.bucket, "Key": dest.full_key(change.key)}  # type: ignore[attr-defined]
        if change.size >= MAX_SINGLE_COPY:
            client.copy(copy_source, target["Bucket"], target["Key"], SourceClient=src.client)
            return None
        extra: dict[str, Any] = {}
        if "VersionId" not in copy_source and change.etag:
            extra["CopySourceIfMatch"] = change.etag  # a newer object is a later batch's business
        resp = client.copy_object(CopySource=copy_source, **target, **extra)
        copied = str(resp.get("CopyObjectResult", {}).get("ETag", "")).strip('"')
        if "VersionId" not in copy_source and change.etag and copied and copied != change.etag and "-" not in change.etag:
            # a server that ignores the precondition copied a newer object: that is the later
            # batch's change (it will find it present), not this one's
            raise SourceChanged("superseded")
        return copied or None


def same_endpoint(source: ObjectStore, dest: Destination) -> bool:
    """Source and destination are buckets of one S3 endpoint and region: CopyObject works between them."""
    from ingest_pipelines.config import S3StoreConfig

    src = source.config
    if dest.records or not isinstance(src, S3StoreConfig) or not isinstance(dest.config, S3StoreConfig):
        return False
    return (src.endpoint_url() or "aws", src.region or "us-east-1") == (
        dest.config.endpoint_url() or "aws",
        dest.config.region or "us-east-1",
    )


def sweep_temp_files(dest: Destination, keys: list[str]) -> None:
    """Remove `.tmp-*` files a killed writer left in the folders these keys are written to."""
    now = time.time()
    folders = {dest.store.path(key).parent for key in keys}  # type: ignore[attr-defined]
    for folder in folders:
        for path in folder.glob(".tmp-*") if folder.is_dir() else ():
            try:
                if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
            except OSError:
                pass  # gone already, or not ours to remove


def _unix(value: Any) -> float:
    return value if isinstance(value, int | float) else value.timestamp()
