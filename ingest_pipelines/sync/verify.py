"""Asset-check logic for sync partitions: does every destination match the batch (object present with
the right size and ETag, deletes gone), and does a records destination hold each change exactly once?

One listing per batch and destination, not a HEAD per object.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ingest_pipelines.records import read_records
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.storage.filesystem import is_folder_key
from ingest_pipelines.sync.batches import ChangeBatch
from ingest_pipelines.sync.destinations import Destination, etags_comparable, range_listing
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.record_writes import batch_record_files


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {"checked": self.checked, "problems": len(self.problems), "first_problems": "\n".join(self.problems[:20])}

    def merge(self, other: CheckOutcome) -> CheckOutcome:
        return CheckOutcome(self.passed and other.passed, self.description, self.checked + other.checked, self.problems + other.problems)


def destinations_match(
    workflow: str,
    batches: Sequence[ChangeBatch],
    source: ObjectStore,
    destinations: list[Destination],
    ledger: SyncLedger,
    observed: dict[tuple[str, str], tuple[int, str] | None] | None = None,
) -> CheckOutcome:
    """Every change of the batches (a group with distinct keys) is visible in every object destination,
    unless a later batch has since brought the key further or the source itself moved on (the later batch
    carries it).

    `observed` is what the applying run just saw each destination hold (its listing, the answer to its
    CopyObject, a delete): those keys are not listed again; the rest are (one listing per destination)."""
    observed = observed or {}
    problems: list[str] = []
    checked = 0
    applied = ledger.applied_in_batches(workflow, [b.id for b in batches])
    pairs = [(batch, change) for batch in batches for change in batch.changes]
    # a plugin source's versions are not content hashes and its sizes may be unknown (0)
    opaque = getattr(source, "opaque_versions", False)
    for dest in destinations:
        if dest.records:
            continue
        newer = ledger.latest_seq(workflow, dest.name, [c.key for _, c in pairs])
        relevant = [(b, c) for b, c in pairs if newer.get(c.key, -1) <= b.seq]
        listing: dict[str, Any] | None = None
        if dest.is_bucket:
            unseen = [dest.full_key(c.key) for _, c in relevant if (dest.name, c.key) not in observed]
            listing = range_listing(dest.store, unseen) if unseen else {}
        for batch, change in relevant:
            if change.operation == "delete" and not dest.deletes:
                continue
            checked += 1
            if (dest.name, change.key) in observed:
                seen = observed[(dest.name, change.key)]
                info = None if seen is None else (seen[0], seen[1] or None)
            elif getattr(dest.store, "holds_version", None) is not None:  # a plugin destination answers per version
                info = (change.size, None) if dest.store.holds_version(change.key, change.version) else None  # type: ignore[attr-defined]
            else:
                info = _lookup(dest, change.key, listing)
            if (change.key, dest.name) not in applied[batch.id]:
                if change.operation != "delete":
                    current = source.head(change.key)
                    if current is None or current.etag != change.etag:
                        continue  # the source moved on before this batch ran: a later batch carries it
                problems.append(f"{change.key} -> {dest.name}: not applied")
                continue
            if change.operation == "delete":
                if info is not None:
                    problems.append(f"{change.key} -> {dest.name}: deleted in the source but still present")
                continue
            if info is None:
                problems.append(f"{change.key} -> {dest.name}: missing")
            elif info[0] != change.size and not (opaque and not change.size):
                problems.append(f"{change.key} -> {dest.name}: size {info[0]} != {change.size}")
            elif not opaque and info[1] is not None and info[1] != change.etag and etags_comparable(info[1], change.etag):
                problems.append(f"{change.key} -> {dest.name}: ETag {info[1]} != {change.etag}")
    description = f"{checked} object(s) checked in {len([d for d in destinations if not d.records])} destination(s)"
    return CheckOutcome(not problems, description, checked, problems)


def _lookup(dest: Destination, key: str, listing: dict[str, Any] | None) -> tuple[int, str | None] | None:
    """(size, etag or None when the store has no content ETags) of the destination's object."""
    if dest.is_folder:
        if is_folder_key(key):
            return (0, None) if dest.store.head(key) is not None else None
        path = dest.store.path(key)  # type: ignore[attr-defined]
        return (path.stat().st_size, None) if path.is_file() else None
    if listing is not None:
        item = listing.get(dest.full_key(key))
        return None if item is None else (int(item.get("Size", 0)), str(item.get("ETag", "")).strip('"'))
    info = dest.store.head(key)
    return None if info is None else (info.size, info.etag)


def records_unique(batches: Sequence[ChangeBatch], destinations: list[Destination], ledger: SyncLedger, workflow: str) -> CheckOutcome:
    """A records destination holds one record per change of each batch: none missing, none twice. A change
    the ledger has no row for (its version was gone when the batch ran: the later batch records it) is
    not expected."""
    problems: list[str] = []
    checked = 0
    applied = ledger.applied_in_batches(workflow, [b.id for b in batches]) if any(d.records for d in destinations) else {}
    for dest in destinations:
        if not dest.records:
            continue
        for batch in batches:
            files = batch_record_files(dest, batch.id)
            records = [r for key in files for r in read_records(dest.store, key)]
            checked += len(records)
            seen = Counter((r.key, r.position, r.operation) for r in records)
            for ident, count in seen.items():
                if count > 1:
                    problems.append(f"{dest.name}: {ident[0]} ({ident[2]} at {ident[1]}) written {count} times")
            for change in batch.changes:
                if (change.key, dest.name) not in applied[batch.id]:
                    continue
                if (change.key, change.position, change.operation) not in seen:
                    problems.append(f"{dest.name}: no record for {change.key} ({change.operation} at {change.position})")
    description = f"{checked} record(s) read from {len([d for d in destinations if d.records])} records destination(s)"
    return CheckOutcome(not problems, description, checked, problems)
