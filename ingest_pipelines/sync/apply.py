"""Applying a change batch to every destination of a sync workflow: object copies (s3, filesystem),
change records (s3-records, filesystem-records), markers, deletes, cleanUp and the webhook.

Idempotent: the ledger skips what a batch already did, and a destination that holds the object is not written again.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig, StoreConfig
from ingest_pipelines.storage import ObjectInfo, ObjectStore, StoreError
from ingest_pipelines.storage.filesystem import is_folder_key
from ingest_pipelines.sync.batches import ChangeBatch
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import AppliedRow, SyncLedger
from ingest_pipelines.sync.webhook import post_uris

try:  # the record writers live in their own package (the Conduit destination)
    from ingest_pipelines.records import ChangeRecord, is_records_destination, read_records, record_file_key, write_records
except ImportError:  # pragma: no cover - only while that package is absent
    ChangeRecord = None  # type: ignore[assignment,misc]
    read_records = write_records = record_file_key = None  # type: ignore[assignment]

    def is_records_destination(config: StoreConfig) -> bool:
        return False


log = logging.getLogger(__name__)

#: CopyObject's limit; bigger objects are copied part by part (UploadPartCopy).
MAX_SINGLE_COPY = 5 * 1024**3


class SyncApplyError(RuntimeError):
    """Some changes of a batch could not be applied; the message lists them (key, destination, reason).
    Everything else of the batch was applied and recorded, so a retry does only the rest."""


@dataclass
class Destination:
    """A destination of the workflow as the applier uses it."""

    name: str
    config: StoreConfig
    store: ObjectStore

    @property
    def records(self) -> bool:
        return is_records_destination(self.config)

    @property
    def deletes(self) -> bool:
        return bool(getattr(self.config, "deletes", False))

    @property
    def markers(self) -> str | None:
        return getattr(self.config, "metafilesPrefix", None) or None

    def marker_key(self, key: str) -> str:
        """The connylabs marker `{metafilesPrefix}{name}.done`, relative to the bucket/folder root."""
        return f"{self.markers}{key}.done"


@dataclass
class ApplyResult:
    batch_id: str
    objects: int = 0
    bytes: int = 0
    snapshots: int = 0
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    copied: int = 0
    already_present: int = 0
    markers_written: int = 0
    deleted_in_destinations: int = 0
    superseded: int = 0
    source_missing: int = 0
    records_files: list[str] = field(default_factory=list)
    cleaned_up: int = 0
    webhook_status: int | None = None
    uris: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped_already_applied: int = 0
    #: (destination, key) -> (size, etag) this run saw the destination hold (its listing, or the answer
    #: to its CopyObject), or None when it deleted the object: the check needs no second listing for these.
    observed: dict[tuple[str, str], tuple[int, str] | None] = field(default_factory=dict)

    def add_counts(self, other: ApplyResult) -> None:
        for name, value in other.__dict__.items():
            if isinstance(value, int) and not isinstance(value, bool) and name != "webhook_status":
                setattr(self, name, getattr(self, name) + value)
            elif isinstance(value, list):
                getattr(self, name).extend(value)


class _Outcome:
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
class _Held:
    """What a destination holds for one key: marker (None = not looked up) and object (if `looked`)."""

    marker: bool | None = None
    info: ObjectInfo | None = None
    looked: bool = False


class _SourceChanged(Exception):
    """The source no longer holds this version (412) or the object at all (404)."""

    def __init__(self, kind: str):
        self.kind = kind


def _client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _full(store: Any, key: str) -> str:
    return store.full_key(key) if hasattr(store, "full_key") else key


class BatchApplier:
    """Applies batches of one workflow. Build once per run; `apply` is safe to call again for the same batch."""

    def __init__(
        self,
        workflow: SyncWorkflow,
        source: ObjectStore,
        destinations: Sequence[Destination],
        ledger: SyncLedger,
        *,
        webhook: Callable[[str, list[str], str], int] | None = None,
    ):
        self.workflow = workflow
        self.source = source
        self.destinations = list(destinations)
        self.ledger = ledger
        self.webhook = webhook or post_uris
        self._server_side = {d.name: self._same_endpoint(d) for d in self.destinations}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ batch

    def apply(self, batch: ChangeBatch, resync: bool = False) -> ApplyResult:
        """Apply every change to every destination that lacks it. `resync` (a snapshot backfill):
        records destinations get records only for object versions they have never had."""
        wf = self.workflow.name
        result = ApplyResult(batch_id=batch.id)
        for change in batch.changes:
            setattr(result, change.operation + "s", getattr(result, change.operation + "s") + 1)
            if change.operation != "delete":
                result.objects += 1
                result.bytes += change.size
        done = self.ledger.applied_in_batch(wf, batch.id)
        rows: list[AppliedRow] = []
        outcomes: list[_Outcome] = []
        tasks: list[tuple[Change, Destination, _Held | None]] = []

        for dest in self.destinations:
            todo = [c for c in batch.changes if (c.key, dest.name) not in done]
            result.skipped_already_applied += len(batch.changes) - len(todo)
            if not todo:
                continue
            if dest.records:
                if resync:
                    had = self.ledger.applied_versions(wf, dest.name, [c.key for c in todo])
                    todo = [c for c in todo if (c.key, c.version) not in had]
                    if todo:
                        outcomes.extend(self._write_records(batch, dest, result, todo))
                else:  # the whole batch: a re-run rewrites the same files with the same records
                    outcomes.extend(self._write_records(batch, dest, result, list(batch.changes)))
                continue
            newer = self.ledger.latest_seq(wf, dest.name, [c.key for c in todo])
            fresh = []
            for change in todo:
                if newer.get(change.key, -1) > batch.seq:
                    result.superseded += 1  # a later batch already brought this key further
                else:
                    fresh.append(change)
            present = self._presence(dest, [c for c in fresh if c.operation != "delete"])
            tasks.extend((c, dest, present.get(c.key) if present is not None else None) for c in fresh)

        for dest in self.destinations:
            if isinstance(dest.config, FilesystemStoreConfig):
                # record files live in the prefix folder, copies in the folders of their keys
                _sweep_temp_files(dest, ["records"] if dest.records else [c.key for c in batch.changes])
        if tasks:
            with ThreadPoolExecutor(max_workers=min(self.workflow.threads, len(tasks))) as pool:
                outcomes.extend(pool.map(lambda task: self._apply_one(*task), tasks))

        for outcome in outcomes:
            if outcome.error:
                result.failures.append(f"{outcome.change.key} -> {outcome.dest.name}: {outcome.error}")
                continue
            if outcome.kind in ("superseded", "source-missing"):
                setattr(result, outcome.kind.replace("-", "_"), getattr(result, outcome.kind.replace("-", "_")) + 1)
                continue
            if outcome.kind == "copied":
                result.copied += 1
            elif outcome.kind in ("present", "marker-only"):
                result.already_present += 1
            if outcome.kind == "marker-only" or (outcome.kind == "copied" and outcome.dest.markers):
                result.markers_written += 1
            if outcome.kind == "deleted":
                result.deleted_in_destinations += 1
            if outcome.uri:
                result.uris.append(outcome.uri)
            if outcome.seen is not False:
                result.observed[(outcome.dest.name, outcome.change.key)] = outcome.seen  # type: ignore[assignment]
            version = outcome.change.version if outcome.change.operation != "delete" else f"delete:{outcome.change.version}"
            rows.append(AppliedRow(batch.id, outcome.change.key, outcome.dest.name, version, outcome.change.operation, batch.seq))
        self.ledger.record_applied(wf, rows)

        if self.workflow.cleanUp:
            result.cleaned_up = self._clean_up(batch, outcomes, done)
        if result.failures:
            raise SyncApplyError(
                f"workflow {wf}: batch {batch.id}: {len(result.failures)} change(s) failed: " + "; ".join(result.failures[:10])
            )
        if self.workflow.webhook and not self.ledger.webhook_sent(wf, batch.id):
            # from the ledger, not from this run: a run that died after recording its changes but
            # before the POST leaves nothing for the re-run to do, yet the call is still owed
            uris = self._batch_uris(batch)
            if uris:
                result.webhook_status = self.webhook(self.workflow.webhook, uris, batch.id)
                self.ledger.record_webhook(wf, batch.id, result.webhook_status)
        self.ledger.mark_batch_applied(wf, batch.id)
        return result

    def _batch_uris(self, batch: ChangeBatch) -> list[str]:
        """Destination URIs of everything this batch stored or found present (record destinations:
        the batch's record files), sorted, so a repeated call carries the same body."""
        applied = self.ledger.applied_in_batch(self.workflow.name, batch.id)
        deleted = {c.key for c in batch.changes if c.operation == "delete"}
        uris: set[str] = set()
        for dest in self.destinations:
            mine = {key for key, name in applied if name == dest.name}
            if not mine:
                continue
            if dest.records:
                uris.update(dest.store.uri(key) for key in batch_record_files(dest, batch.id))
            else:
                uris.update(dest.store.uri(key) for key in mine - deleted)
        return sorted(uris)

    # ------------------------------------------------------------------ presence

    def _presence(self, dest: Destination, changes: list[Change]) -> dict[str, _Held] | None:
        """What the destination already holds for these keys, from one range listing per batch
        (objects and markers) instead of a HEAD per key. None: list too costly, HEAD per key."""
        if not changes or not isinstance(dest.config, S3StoreConfig):
            return None
        keys = sorted(c.key for c in changes)
        objects = range_listing(dest.store, [_full(dest.store, k) for k in keys])
        if objects is None:
            return None
        markers: dict[str, dict[str, Any]] | None = {}
        if dest.markers:
            markers = range_listing(dest.store, [dest.marker_key(k) for k in keys])
            if markers is None:
                return None
        out: dict[str, _Held] = {}
        for key in keys:
            item = objects.get(_full(dest.store, key))
            info = (
                None
                if item is None
                else ObjectInfo(key, int(item.get("Size", 0)), str(item.get("ETag", "")).strip('"'), item["LastModified"])
            )
            out[key] = _Held(marker=dest.marker_key(key) in (markers or {}) if dest.markers else False, info=info, looked=True)
        return out

    # ------------------------------------------------------------------ one change

    def _apply_one(self, change: Change, dest: Destination, held: _Held | None) -> _Outcome:
        held = held or _Held()
        uri = dest.store.uri(change.key)
        try:
            if change.operation == "delete":
                if dest.deletes:
                    dest.store.delete(change.key)
                    if dest.markers:
                        self._delete_marker(dest, change.key)
                    return _Outcome(change, dest, "deleted", seen=None if isinstance(dest.config, S3StoreConfig) else False)
                return _Outcome(change, dest, "delete-ignored")
            if dest.markers and held.marker is None:
                held.marker = self._marker_exists(dest, change.key)
            if held.marker and change.operation in ("snapshot", "create"):
                # connylabs: the marker says "delivered" (the consumer may have moved the object
                # away since); an update is a new version and is delivered again
                return _Outcome(change, dest, "present", uri=uri)
            if not held.looked:
                held.info = self._head(dest, change)
            if held.info is not None and self._holds(dest, held.info, change):
                seen = (held.info.size, held.info.etag) if isinstance(dest.config, S3StoreConfig) else False
                if dest.markers and not held.marker:
                    self._put_marker(dest, change.key)
                    return _Outcome(change, dest, "marker-only", uri=uri, seen=seen)
                return _Outcome(change, dest, "present", uri=uri, seen=seen)
            copied_etag = self._copy(change, dest)
            if dest.markers and not held.marker:
                self._put_marker(dest, change.key)
            seen = (change.size, copied_etag) if copied_etag else False
            return _Outcome(change, dest, "copied", uri=uri, size=change.size, seen=seen)
        except _SourceChanged as exc:
            return _Outcome(change, dest, exc.kind)
        except Exception as exc:  # recorded per change; the rest of the batch goes on
            log.warning("%s: %s -> %s failed: %s", self.workflow.name, change.key, dest.name, exc)
            return _Outcome(change, dest, "failed", error=f"{type(exc).__name__}: {exc}")

    def _head(self, dest: Destination, change: Change) -> ObjectInfo | None:
        holds = getattr(dest.store, "holds_version", None)
        if holds is not None:  # a plugin destination answers for one version (plugins/adapters.py)
            return (
                ObjectInfo(change.key, change.size, change.etag, _mtime(change.changed_at)) if holds(change.key, change.version) else None
            )
        if isinstance(dest.config, FilesystemStoreConfig):
            if is_folder_key(change.key):
                return dest.store.head(change.key)
            path = dest.store.path(change.key)  # type: ignore[attr-defined]
            if not path.is_file():
                return None
            stat = path.stat()
            return ObjectInfo(change.key, stat.st_size, "", _mtime(stat.st_mtime))  # type: ignore[arg-type]
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
            return same_size and (change.key, change.version) in self.ledger.applied_versions(self.workflow.name, dest.name, [change.key])
        if isinstance(dest.config, FilesystemStoreConfig):
            return info.size == change.size and abs(_unix(info.last_modified) - change.changed_at) < 1.0
        if info.size != change.size:
            return False
        if info.etag == change.etag:
            return True
        if etags_comparable(info.etag, change.etag):
            return False
        return (change.key, change.version) in self.ledger.applied_versions(self.workflow.name, dest.name, [change.key])

    def _copy(self, change: Change, dest: Destination) -> str | None:
        """Copy one object; returns the ETag the destination answered with (server-side copies), else None."""
        if self._server_side.get(dest.name):
            try:
                return self._server_side_copy(change, dest)
            except ClientError as exc:
                code = _client_error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    raise _SourceChanged("superseded") from exc
                if code in ("NoSuchKey", "404", "NoSuchVersion"):
                    raise _SourceChanged("source-missing") from exc
                if code not in ("AccessDenied", "403"):
                    raise
                self._server_side[dest.name] = False  # the destination's credentials cannot read the source
        body, content_type, metadata = self._open_source(change)
        store_version = getattr(dest.store, "store_version", None)
        try:
            if store_version is not None:  # a plugin destination stores an element at a version
                store_version(change.key, change.version, body, content_type=content_type, metadata=metadata, size=change.size)
            else:
                dest.store.upload_fileobj(change.key, body, content_type=content_type, metadata=metadata)
        finally:
            body.close()
        if isinstance(dest.config, FilesystemStoreConfig):
            # the object's LastModified as mtime: a later run recognises the file as this version
            os.utime(dest.store.path(change.key), (change.changed_at, change.changed_at))  # type: ignore[attr-defined]
        return None

    def _server_side_copy(self, change: Change, dest: Destination) -> str | None:
        src: Any = self.source
        client = dest.store.client  # type: ignore[attr-defined]
        copy_source: dict[str, str] = {"Bucket": src.bucket, "Key": src.full_key(change.key)}
        if change.version_id and change.version_id != "null":
            copy_source["VersionId"] = change.version_id
        target = {"Bucket": dest.store.bucket, "Key": dest.store.full_key(change.key)}  # type: ignore[attr-defined]
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
            raise _SourceChanged("superseded")
        return copied or None

    def _open_source(self, change: Change) -> tuple[Any, str | None, dict[str, str] | None]:
        """A stream of the change's version of the object, with its content type and user metadata."""
        src: Any = self.source
        if not hasattr(src, "client"):
            try:
                if hasattr(src, "open_element"):  # a plugin source knows each element's content type
                    return src.open_element(change.key, change.version)
                return src.open(change.key), mimetypes.guess_type(change.key)[0], None
            except StoreError as exc:
                raise _SourceChanged("source-missing") from exc
        kwargs: dict[str, Any] = {"Bucket": src.bucket, "Key": src.full_key(change.key)}
        if change.version_id and change.version_id != "null":
            kwargs["VersionId"] = change.version_id
        elif change.etag:
            kwargs["IfMatch"] = change.etag
        try:
            resp = src.client.get_object(**kwargs)
        except ClientError as exc:
            code = _client_error_code(exc)
            if code in ("PreconditionFailed", "412"):
                raise _SourceChanged("superseded") from exc
            if code in ("NoSuchKey", "404", "NoSuchVersion"):
                raise _SourceChanged("source-missing") from exc
            raise
        return resp["Body"], resp.get("ContentType"), dict(resp.get("Metadata") or {})

    # ------------------------------------------------------------------ markers

    def _marker_exists(self, dest: Destination, key: str) -> bool:
        marker = dest.marker_key(key)
        if isinstance(dest.config, S3StoreConfig):
            try:
                dest.store.client.head_object(Bucket=dest.store.bucket, Key=marker)  # type: ignore[attr-defined]
                return True
            except ClientError as exc:
                if _client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return (dest.store.root / marker).is_file()  # type: ignore[attr-defined]

    def _put_marker(self, dest: Destination, key: str) -> None:
        marker = dest.marker_key(key)
        if isinstance(dest.config, S3StoreConfig):
            dest.store.client.put_object(Bucket=dest.store.bucket, Key=marker, Body=b"")  # type: ignore[attr-defined]
            return
        path = dest.store.root / marker  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def _delete_marker(self, dest: Destination, key: str) -> None:
        marker = dest.marker_key(key)
        if isinstance(dest.config, S3StoreConfig):
            dest.store.client.delete_object(Bucket=dest.store.bucket, Key=marker)  # type: ignore[attr-defined]
        else:
            (dest.store.root / marker).unlink(missing_ok=True)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ records

    def _write_records(self, batch: ChangeBatch, dest: Destination, result: ApplyResult, changes: list[Change]) -> list[_Outcome]:
        """One record per change, in batch order, in files named from the batch id (a re-run overwrites)."""
        if write_records is None:
            raise SyncApplyError(f"destination {dest.name}: record destinations need the ingest_pipelines.records package")
        with ThreadPoolExecutor(max_workers=max(1, min(self.workflow.threads, len(changes)))) as pool:
            payloads = list(pool.map(self._record_payload, changes))
        records = []
        for change, (payload, metadata) in zip(changes, payloads, strict=True):
            records.append(ChangeRecord(change.operation, change.position, change.key, metadata, payload))
        fmt = getattr(dest.config, "format", "json")
        buffer_size = int(getattr(dest.config, "bufferSize", 1000))
        keys = write_records(dest.store, batch.id, records, fmt, buffer_size)
        # the webhook hears about the record files, not about every object inside them
        result.records_files.extend(dest.store.uri(k) for k in keys)
        result.uris.extend(dest.store.uri(k) for k in keys)
        return [_Outcome(c, dest, "records") for c in changes]

    def _record_payload(self, change: Change) -> tuple[bytes, dict[str, str]]:
        if change.operation == "delete":
            return b"", {}
        try:
            body, content_type, metadata = self._open_source(change)
        except _SourceChanged:
            # the object changed or went away before this batch ran: read what is there now (Conduit
            # reads at read time too); gone -> empty payload, and a later delete record follows
            try:
                body, content_type, metadata = self._open_source(Change(change.operation, change.key, change.changed_at))
            except _SourceChanged:
                return b"", {"content-type": "application/octet-stream"}
        try:
            payload = body.read()
        finally:
            body.close()
        meta = {"content-type": content_type or "application/octet-stream"}
        meta.update(metadata or {})
        return payload, meta

    # ------------------------------------------------------------------ cleanUp

    def _clean_up(self, batch: ChangeBatch, outcomes: Iterable[_Outcome], done: set[tuple[str, str]]) -> int:
        """Delete a source object once every destination holds this version of it (connylabs cleanUp)."""
        held: dict[str, set[str]] = {}
        for outcome in outcomes:
            if outcome.error is None and outcome.kind in ("copied", "present", "marker-only", "records"):
                held.setdefault(outcome.change.key, set()).add(outcome.dest.name)
        for key, dest in done:
            held.setdefault(key, set()).add(dest)
        names = {d.name for d in self.destinations}
        ready = [c for c in batch.changes if c.operation != "delete" and held.get(c.key, set()) >= names]
        if not ready:
            return 0
        # the key index learns first: a listing between the two steps must not see a "delete"
        self.ledger.mark_cleaned(self.workflow.name, [(c.key, c.etag) for c in ready])

        def remove(change: Change) -> int:
            clean_up = getattr(self.source, "clean_up_element", None)
            if clean_up is not None:  # connylabs' CleanUp through the plugin: idempotent, the plugin decides
                return int(clean_up(change.key, change.version))
            current = self.source.head(change.key)
            if current is None:
                return 0
            if current.etag != change.etag:
                return 0  # a newer object arrived meanwhile: it is not ours to delete
            self.source.delete(change.key)
            return 1

        with ThreadPoolExecutor(max_workers=min(self.workflow.threads, len(ready))) as pool:
            return sum(pool.map(remove, ready))

    # ------------------------------------------------------------------ helpers

    def _same_endpoint(self, dest: Destination) -> bool:
        src = self.source.config
        if dest.records or not isinstance(src, S3StoreConfig) or not isinstance(dest.config, S3StoreConfig):
            return False
        return (src.endpoint_url() or "aws", src.region or "us-east-1") == (
            dest.config.endpoint_url() or "aws",
            dest.config.region or "us-east-1",
        )


#: a temp file untouched this long belongs to a writer that died (an active writer keeps its mtime fresh).
STALE_TEMP_SECONDS = 60.0


def _sweep_temp_files(dest: Destination, keys: list[str]) -> None:
    """Remove `.tmp-*` files a killed writer left in the folders this batch writes to."""
    now = time.time()
    folders = {dest.store.path(key).parent for key in keys}  # type: ignore[attr-defined]
    for folder in folders:
        for path in folder.glob(".tmp-*") if folder.is_dir() else ():
            try:
                if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
            except OSError:
                pass  # gone already, or not ours to remove


def range_listing(store: Any, full_keys: list[str]) -> dict[str, dict[str, Any]] | None:
    """Bucket listing entries for the range [min(full_keys), max(full_keys)], or None when the range
    holds far more keys than asked for (then a HEAD per key is cheaper)."""
    if not full_keys:
        return {}
    first, last = min(full_keys), max(full_keys)
    common = os.path.commonprefix([first, last])
    budget = 2 * len(full_keys) + 1000
    found: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": common, "StartAfter": first[:-1]}
    wanted = set(full_keys)
    seen = 0
    while True:
        page = store.client.list_objects_v2(**kwargs)
        contents = page.get("Contents", [])
        for item in contents:
            if item["Key"] > last:
                return found
            if item["Key"] in wanted:
                found[item["Key"]] = item
        seen += len(contents)
        if not page.get("IsTruncated") or not contents:
            return found
        if seen > budget:
            return None
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
        kwargs.pop("StartAfter", None)


def etags_comparable(first: str, second: str) -> bool:
    """Whether two ETags of one content must be equal: only two single-part ETags (the content's MD5)
    are; a multipart ETag (`md5-N`) depends on how the object was uploaded."""
    return bool(first) and bool(second) and "-" not in first and "-" not in second


def _unix(value: Any) -> float:
    return value if isinstance(value, int | float) else value.timestamp()


def _mtime(seconds: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, tz=UTC)


def batch_record_files(dest: Destination, batch_id: str) -> list[str]:
    """The record files of a batch in a records destination: its numbered names, probed with HEAD
    until the first gap (no listing of a folder that grows with every batch)."""
    fmt = getattr(dest.config, "format", "json")
    keys = []
    while dest.store.head(key := record_file_key(batch_id, len(keys), fmt)) is not None:
        keys.append(key)
    return keys
