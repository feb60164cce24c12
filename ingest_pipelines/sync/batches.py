"""Change batches: at most `batchSize` changes of one partition (a snapshot shard or one hour), with a
deterministic id, committed to the ledger (its document included) in the transaction that moves the cursor.

Batches committed by earlier versions live as JSON in the state store (`{workflow}/batches/snapshot/{id}.json`,
`{workflow}/batches/changes/{YYYY-MM-DD-HH}/{id}.json`) and are still read from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from ingest_pipelines.config import dagster_name
from ingest_pipelines.state import StateStore
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.ledger import BatchRow, SyncLedger

BatchAsset = Literal["snapshot", "changes"]

#: Dagster's HourlyPartitionsDefinition key format.
HOUR_FORMAT = "%Y-%m-%d-%H:00"
#: batch numbers inside a tick stay below this, so (tick, index) orders batches as one integer.
BATCHES_PER_TICK = 10_000


class BatchError(RuntimeError):
    """A batch document is missing or unreadable; the message names the batch and the state key."""


def hour_key(timestamp: float, start: float = 0.0) -> str:
    """The hourly partition of a change time (times before the partitions' start count in its first hour)."""
    return datetime.fromtimestamp(max(timestamp, start), tz=UTC).strftime(HOUR_FORMAT)


def hour_bounds(partition: str) -> tuple[float, float]:
    start = datetime.strptime(partition, HOUR_FORMAT).replace(tzinfo=UTC).timestamp()
    return start, start + 3600.0


@dataclass(frozen=True)
class ChangeBatch:
    id: str
    workflow: str
    asset: BatchAsset
    #: a snapshot shard key, or an hour ("2024-05-01-13:00").
    partition: str
    seq: int
    created_at: float
    changes: tuple[Change, ...]

    @property
    def position_from(self) -> str:
        return self.changes[0].position if self.changes else ""

    @property
    def position_to(self) -> str:
        return self.changes[-1].position if self.changes else ""

    @property
    def oldest_change(self) -> float:
        return min((c.changed_at for c in self.changes), default=self.created_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "asset": self.asset,
            "partition": self.partition,
            "seq": self.seq,
            "created_at": self.created_at,
            "position_from": self.position_from,
            "position_to": self.position_to,
            "changes": [c.to_json() for c in self.changes],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ChangeBatch:
        return cls(
            id=doc["id"],
            workflow=doc["workflow"],
            asset=doc["asset"],
            partition=doc["partition"],
            seq=int(doc["seq"]),
            created_at=float(doc["created_at"]),
            changes=tuple(Change.from_json(c) for c in doc["changes"]),
        )

    def row(self) -> BatchRow:
        """The ledger's registry row, with the batch's document."""
        document = orjson.dumps(self.to_json())
        return BatchRow(self.id, self.asset, self.partition, self.seq, len(self.changes), self.oldest_change, self.created_at, document)

    def ref(self) -> dict[str, str]:
        """What a run request needs to find the batch again."""
        return {"id": self.id, "asset": self.asset, "partition": self.partition}


def batch_id(workflow: str, generation: str, tick: int, index: int) -> str:
    """`<dname>-<generation>-<tick>-<index>`: the same tick of the same scan state always names its
    batches the same, and a new ledger (new generation) never reuses an old id."""
    if index >= BATCHES_PER_TICK:
        raise BatchError(f"{workflow}: more than {BATCHES_PER_TICK} batches in one tick")
    return f"{dagster_name(workflow)}-{generation}-{tick:08d}-{index:04d}"


def chunk_changes(changes: Iterable[Change], size: int) -> Iterator[list[Change]]:
    chunk: list[Change] = []
    for change in changes:
        chunk.append(change)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class BatchStore:
    """Reads one workflow's committed batches: from the ledger, or (batches of earlier versions) the state store."""

    def __init__(self, ledger: SyncLedger, workflow: str, state: StateStore | None = None):
        self.ledger = ledger
        self.workflow = workflow
        self.state = state

    def doc_key(self, asset: str, partition: str, batch: str) -> str:
        """Where an earlier version wrote a batch document in the state store."""
        if asset == "snapshot":
            return f"{self.workflow}/batches/snapshot/{batch}.json"
        return f"{self.workflow}/batches/changes/{partition[:13]}/{batch}.json"

    def read(self, asset: str, partition: str, batch: str) -> ChangeBatch:
        return self.read_many([(asset, partition, batch)])[batch]

    def read_many(self, refs: Iterable[tuple[str, str, str]]) -> dict[str, ChangeBatch]:
        """Batches by id ((asset, partition, id) each), in one ledger query; BatchError names one that is missing."""
        refs = list(refs)
        documents = self.ledger.batch_documents(self.workflow, [batch for _, _, batch in refs])
        out = {}
        for asset, partition, batch in refs:
            document = documents.get(batch)
            if document is not None:
                out[batch] = ChangeBatch.from_json(orjson.loads(document))
                continue
            key = self.doc_key(asset, partition, batch)
            legacy = self.state.get_json(key) if self.state is not None else None
            if legacy is None:
                raise BatchError(
                    f"{self.workflow}: batch {batch} not found in the ledger" + (f" nor the state store (key {key})" if self.state else "")
                )
            out[batch] = ChangeBatch.from_json(legacy)
        return out

    def partition_batches(self, asset: str, partition: str) -> list[ChangeBatch]:
        """Every committed batch of one partition in detection order (a backfill re-applies them all)."""
        rows = self.ledger.committed_batches(self.workflow, asset, partition)
        found = self.read_many([(asset, partition, row.batch_id) for row in rows])
        return [found[row.batch_id] for row in rows]
