"""Change records for the records destinations (s3-records, filesystem-records): one record per change, in
batch order, in files named from the batch id, so a re-run overwrites its files and never adds a copy.

Payloads are read from the source when the batch is applied, once per change for all records destinations.
A change whose version the source no longer holds (overwritten or deleted before the batch ran, on a source
without versioning) gets no record: the later batch that carries the newer version or the delete records
it, so each version that could be read is recorded exactly once.
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

#: (payload, metadata), or the reason there is none: "superseded" / "source-missing"
Payload = tuple[bytes, dict[str, str]] | str


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
    except SourceChanged as exc:
        return exc.kind
    try:
        payload = body.read()
    finally:
        body.close()
    meta = {"content-type": content_type or "application/octet-stream"}
    meta.update(metadata or {})
    return payload, meta


def write_batch_records(
    dest: Destination, batch: ChangeBatch, changes: Sequence[Change], payloads: Sequence[tuple[bytes, dict[str, str]]]
) -> list[str]:
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
