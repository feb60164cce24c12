"""Change records for the records destinations (s3-records, filesystem-records): one record per change, in
batch order, in files named from the batch id, so a re-run overwrites its files and never adds a copy.

Payloads are read from the source when the batch is applied, once per change for all records destinations.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ingest_pipelines.records import ChangeRecord, RecordsDestinationConfig, record_file_key, write_records
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.batches import ChangeBatch
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.copies import SourceChanged, open_version
from ingest_pipelines.sync.destinations import Destination

Payload = tuple[bytes, dict[str, str]]


def read_payloads(source: ObjectStore, changes: Sequence[Change], threads: int) -> list[Payload]:
    """Each change's payload and metadata (content type plus user metadata), read concurrently."""
    if not changes:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(changes)))) as pool:
        return list(pool.map(lambda change: record_payload(source, change), changes))


def record_payload(source: ObjectStore, change: Change) -> Payload:
    if change.operation == "delete":
        return b"", {}
    try:
        body, content_type, metadata = open_version(source, change)
    except SourceChanged:
        # the object changed or went away before this batch ran: read what is there now (Conduit
        # reads at read time too); gone -> empty payload, and a later delete record follows
        try:
            body, content_type, metadata = open_version(source, Change(change.operation, change.key, change.changed_at))
        except SourceChanged:
            return b"", {"content-type": "application/octet-stream"}
    try:
        payload = body.read()
    finally:
        body.close()
    meta = {"content-type": content_type or "application/octet-stream"}
    meta.update(metadata or {})
    return payload, meta


def write_batch_records(dest: Destination, batch: ChangeBatch, changes: Sequence[Change], payloads: Sequence[Payload]) -> list[str]:
    """Write the records of `changes` (of `batch`, in its order); returns the record files' URIs."""
    records = [
        ChangeRecord(change.operation, change.position, change.key, metadata, payload)
        for change, (payload, metadata) in zip(changes, payloads, strict=True)
    ]
    config = _records_config(dest)
    keys = write_records(dest.store, batch.id, records, config.format, config.bufferSize)
    return [dest.store.uri(key) for key in keys]


def batch_record_files(dest: Destination, batch_id: str) -> list[str]:
    """The record files of a batch in a records destination: its numbered names, probed with HEAD
    until the first gap (no listing of a folder that grows with every batch)."""
    fmt = _records_config(dest).format
    keys = []
    while dest.store.head(key := record_file_key(batch_id, len(keys), fmt)) is not None:
        keys.append(key)
    return keys


def _records_config(dest: Destination) -> RecordsDestinationConfig:
    if not isinstance(dest.config, RecordsDestinationConfig):
        raise TypeError(f"destination {dest.name} is not a records destination")
    return dest.config
