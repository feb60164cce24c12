"""Change detection for a sync source: snapshot pages, CDC by comparing listing pages with the key index
(ListObjectsV2, or ListObjectVersions on a versioned bucket), passes over a plugin source's enumeration (any
order: deletes are index keys a complete pass did not see), and S3 event notifications from SQS.

Every function here is pure over (listing page, key index slice): the tick in `tick.py` drives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

import orjson

from ingest_pipelines.positions import CDC, SNAPSHOT, format_position
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.ledger import IndexEntry

Operation = Literal["snapshot", "create", "update", "delete"]


class ChangeDetectionError(RuntimeError):
    """Listing or reading the source failed; the message names the source and the request."""


@dataclass(frozen=True)
class Change:
    """One change of one source object. `changed_at` is LastModified (the delete marker's for a
    versioned delete, the detection time for an unversioned delete), in unix seconds."""

    operation: Operation
    key: str
    changed_at: float
    etag: str = ""
    size: int = 0
    version_id: str | None = None
    position: str = ""

    @property
    def version(self) -> str:
        """The ledger's version of this change: the S3 version id, else the ETag."""
        return self.version_id or self.etag

    def to_json(self) -> list[Any]:
        return [self.operation, self.key, self.changed_at, self.etag, self.size, self.version_id, self.position]

    @classmethod
    def from_json(cls, value: list[Any]) -> Change:
        operation, key, changed_at, etag, size, version_id, position = value
        return cls(operation, key, float(changed_at), etag, int(size), version_id, position)


def unix(value: datetime | float) -> float:
    return value if isinstance(value, int | float) else value.timestamp()


@dataclass(frozen=True)
class Latest:
    """The newest entry of a key in a listing: an object version, or a delete marker."""

    key: str
    last_modified: float
    etag: str = ""
    size: int = 0
    version_id: str | None = None
    deleted: bool = False
    #: the listing showed older versions of this key (a versioned create is then an update).
    has_older: bool = False
    #: `last_modified` comes from the source; False: the source did not say (a plugin element), it is the
    #: listing time, and the settle delay does not apply.
    dated: bool = True


@dataclass
class ListingPage:
    """One listing request's worth of keys. The page covers the key range (after, upto]; upto=None
    means "to the end of the listing". Keys of the index inside that range but absent from
    `latest` are gone from the source."""

    latest: dict[str, Latest]
    after: str
    upto: str | None
    more: bool
    versioned: bool = False
    #: ListObjectVersions' NextVersionIdMarker: where the next page continues inside key `upto`.
    upto_version: str = ""
    #: a page of a plugin source's enumeration: `after` / `upto` are enumeration positions, not keys, and the
    #: page covers no key range (pass_diff, not cdc_diff).
    enumerated: bool = False


@dataclass
class PageDiff:
    changes: list[Change] = field(default_factory=list)
    upserts: list[IndexEntry] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- listing


def list_page(store: ObjectStore, prefix: str, after: str, page_size: int, versioned: bool, after_version: str = "") -> ListingPage:
    """One page of the source under `prefix` (relative to the store's prefix), after key `after` (for a plugin
    source: at enumeration position `after`, "" = the start)."""
    if getattr(store, "enumerate_page", None) is not None:
        return _enumeration_page(store, prefix, after)
    if versioned:
        return _list_versions_page(store, prefix, after, page_size, after_version)
    objects, more = store.list_page(prefix=prefix, start_after=after or None, max_keys=page_size)
    latest = {o.key: Latest(o.key, unix(o.last_modified), o.etag, o.size, o.version_id) for o in objects}
    upto = objects[-1].key if (more and objects) else None
    return ListingPage(latest=latest, after=after, upto=upto, more=more and bool(objects))


def _list_versions_page(store: Any, prefix: str, after: str, page_size: int, after_version: str) -> ListingPage:
    from botocore.exceptions import ClientError

    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": store.full_key(prefix), "MaxKeys": page_size}
    if after:
        # continue exactly where the last page stopped (servers differ on KeyMarker alone); the
        # older versions of key `after` that follow were decided already and are skipped below
        kwargs["KeyMarker"] = store.full_key(after)
        if after_version:
            kwargs["VersionIdMarker"] = after_version
    try:
        page = store.client.list_object_versions(**kwargs)
    except ClientError as exc:
        raise ChangeDetectionError(f"{store.config.name}: ListObjectVersions on {store.uri(prefix)} failed: {exc}") from exc
    latest: dict[str, Latest] = {}
    counts: dict[str, int] = {}
    entries = [(v, False) for v in page.get("Versions", [])] + [(m, True) for m in page.get("DeleteMarkers", [])]
    for item, deleted in entries:
        key = store.relative_key(item["Key"])
        if after and key <= after:
            continue
        counts[key] = counts.get(key, 0) + 1
        if item.get("IsLatest"):
            latest[key] = Latest(
                key=key,
                last_modified=unix(item["LastModified"]),
                etag="" if deleted else str(item.get("ETag", "")).strip('"'),
                size=0 if deleted else int(item.get("Size", 0)),
                version_id=item.get("VersionId"),
                deleted=deleted,
            )
    for key, entry in latest.items():
        if counts[key] > 1:
            latest[key] = Latest(**{**entry.__dict__, "has_older": True})
    more = bool(page.get("IsTruncated"))
    upto = store.relative_key(page["NextKeyMarker"]) if more and page.get("NextKeyMarker") else None
    if more and upto is None:
        more = False
    upto_version = str(page.get("NextVersionIdMarker") or "") if more else ""
    return ListingPage(latest=latest, after=after, upto=upto, more=more, versioned=True, upto_version=upto_version)


def _enumeration_page(store: Any, prefix: str, position: str) -> ListingPage:
    """One page of a plugin source's enumeration (its own order and page size), keys under `prefix` only."""
    import time

    listed, following = store.enumerate_page(position or None)
    now = time.time()
    latest: dict[str, Latest] = {}
    for element in listed:
        if not element.key.startswith(prefix):
            continue
        dated = element.modified is not None
        latest[element.key] = Latest(element.key, element.modified if dated else now, element.version, element.size, None, dated=dated)
    more = following is not None
    return ListingPage(latest=latest, after=position, upto=following if more else None, more=more, enumerated=True)


def bucket_is_versioned(store: Any) -> bool:
    """Whether an S3 source keeps versions (Enabled or Suspended); other stores never do."""
    client = getattr(store, "client", None)
    if client is None:
        return False
    from botocore.exceptions import ClientError

    try:
        status = client.get_bucket_versioning(Bucket=store.bucket).get("Status")
    except ClientError as exc:
        raise ChangeDetectionError(f"{store.config.name}: GetBucketVersioning on {store.bucket} failed: {exc}") from exc
    return status in ("Enabled", "Suspended")


# --------------------------------------------------------------------------- diffs


def _entry(latest: Latest) -> IndexEntry:
    return IndexEntry(latest.key, latest.etag, latest.size, latest.last_modified, latest.version_id)


def snapshot_diff(page: ListingPage, index: dict[str, IndexEntry], snapshot_max: int) -> tuple[PageDiff, int]:
    """Snapshot: every live object not yet in the index with this ETag is a `snapshot` change. An
    object already there (a resumed snapshot, overlapping shards) is not emitted twice."""
    diff = PageDiff()
    for key in sorted(page.latest):
        item = page.latest[key]
        if item.deleted:
            continue
        known = index.get(key)
        if known is not None and known.etag == item.etag and known.version_id == item.version_id and not known.cleaned:
            continue
        snapshot_max = max(snapshot_max, int(item.last_modified))
        diff.changes.append(
            Change("snapshot", key, item.last_modified, item.etag, item.size, item.version_id, format_position(key, SNAPSHOT, snapshot_max))
        )
        diff.upserts.append(_entry(item))
    return diff, snapshot_max


def cdc_diff(page: ListingPage, index: dict[str, IndexEntry], cutoff: float, now: float) -> PageDiff:
    """CDC: compare one listing page with the index entries of the same key range.

    new key -> create (update if the listing shows older versions); other ETag/version -> update;
    latest is a delete marker, or the key is gone -> delete. Objects younger than `cutoff` (the
    settle delay) are left alone until a later pass, and so is their index entry."""
    assert not page.enumerated, "an enumeration page covers no key range: use pass_diff"
    diff = PageDiff()
    for key in sorted(set(page.latest) | set(index)):
        item = page.latest.get(key)
        known = index.get(key)
        if item is not None and item.last_modified > cutoff:
            continue  # not settled: decide on a later pass
        if item is None or item.deleted:
            if known is None:
                continue
            diff.deletes.append(key)
            if known.cleaned:
                continue  # cleanUp removed it on purpose
            changed_at = item.last_modified if item is not None else now
            version = item.version_id if item is not None else None
            diff.changes.append(Change("delete", key, changed_at, known.etag, 0, version, format_position(key, CDC, changed_at)))
            continue
        if known is not None and not known.cleaned and known.etag == item.etag and known.size == item.size:
            if not page.versioned or known.version_id == item.version_id:
                continue
        if known is not None and known.cleaned and known.etag == item.etag:
            continue  # cleanUp has not finished deleting it (or a crash came between): not new
        operation: Operation = "update" if (known is not None and not known.cleaned) or item.has_older else "create"
        diff.changes.append(
            Change(operation, key, item.last_modified, item.etag, item.size, item.version_id, format_position(key, CDC, item.last_modified))
        )
        diff.upserts.append(_entry(item))
    return diff


def pass_diff(page: ListingPage, index: dict[str, IndexEntry], cutoff: float, now: float) -> PageDiff:
    """CDC over a plugin source's enumeration, which may come in any order: each element is compared with its own
    index entry (new key -> create, other version -> update). Deletes are not decided per page but by
    sweep_diff, once a pass has enumerated everything. Dated elements younger than `cutoff` wait for a later pass."""
    diff = PageDiff()
    for key in sorted(page.latest):
        item = page.latest[key]
        if item.dated and item.last_modified > cutoff:
            continue  # not settled: decide on a later pass
        known = index.get(key)
        if known is not None and known.etag == item.etag:
            continue  # same version (cleaned: cleanUp has not removed it yet, or it is kept at the source)
        changed_at = item.last_modified if item.dated else now
        operation: Operation = "update" if known is not None and not known.cleaned else "create"
        diff.changes.append(Change(operation, key, changed_at, item.etag, item.size, None, format_position(key, CDC, changed_at)))
        diff.upserts.append(IndexEntry(key, item.etag, item.size, changed_at, None))
    return diff


def sweep_diff(unseen: Iterable[IndexEntry], now: float) -> PageDiff:
    """The end of a pass over a plugin source: index entries the pass did not see are deletes (an entry that
    cleanUp removed on purpose leaves the index without a change)."""
    diff = PageDiff()
    for entry in unseen:
        diff.deletes.append(entry.key)
        if not entry.cleaned:
            diff.changes.append(Change("delete", entry.key, now, entry.etag, 0, None, format_position(entry.key, CDC, now)))
    return diff


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventMessage:
    """One SQS message: its receipt handle (to delete it) and the source keys it names."""

    receipt_handle: str
    keys: tuple[str, ...]


def event_keys(body: str, bucket: str, prefix: str) -> list[str]:
    """Source keys (relative to `prefix`) named by an S3 event notification body. S3 URL-encodes
    keys in events (a space is `+`), so every key goes through unquote_plus. Test events and
    records of other buckets or outside the prefix name nothing."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    if isinstance(doc, dict) and "Message" in doc and "Records" not in doc:  # delivered through SNS
        try:
            doc = orjson.loads(doc["Message"])
        except (orjson.JSONDecodeError, TypeError):
            return []
    records = doc.get("Records") if isinstance(doc, dict) else None
    keys: list[str] = []
    for record in records or []:
        s3 = record.get("s3") or {}
        if (s3.get("bucket") or {}).get("name") not in (None, bucket):
            continue
        name = (s3.get("object") or {}).get("key")
        if not isinstance(name, str):
            continue
        key = unquote_plus(name)
        if key.startswith(prefix):
            keys.append(key[len(prefix) :])
    return keys


def event_diff(heads: dict[str, Any], index: dict[str, IndexEntry], now: float) -> PageDiff:
    """Events are hints: the truth is the object as a HEAD sees it now, compared with the index. A
    redelivered or out-of-order event therefore never emits a change twice."""
    diff = PageDiff()
    for key in sorted(heads):
        info = heads[key]
        known = index.get(key)
        if info is None:
            if known is None:
                continue
            diff.deletes.append(key)
            if not known.cleaned:
                diff.changes.append(Change("delete", key, now, known.etag, 0, None, format_position(key, CDC, now)))
            continue
        if known is not None and known.etag == info.etag and known.size == info.size and known.version_id == info.version_id:
            continue
        if known is not None and known.cleaned and known.etag == info.etag:
            continue
        changed_at = unix(info.last_modified)
        operation: Operation = "update" if known is not None and not known.cleaned else "create"
        diff.changes.append(
            Change(operation, key, changed_at, info.etag, info.size, info.version_id, format_position(key, CDC, changed_at))
        )
        diff.upserts.append(IndexEntry(key, info.etag, info.size, changed_at, info.version_id))
    return diff


def dedupe_keys(messages: Iterable[EventMessage]) -> list[str]:
    seen: dict[str, None] = {}
    for message in messages:
        for key in message.keys:
            seen.setdefault(key, None)
    return list(seen)
