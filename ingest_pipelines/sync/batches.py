"""Change batches: at most `batchSize` changes of one partition (a snapshot shard or one hour), with a
deterministic id, written durably to the state store before the sensor's cursor moves.

State layout: `{workflow}/batches/snapshot/{id}.json` and `{workflow}/batches/changes/{YYYY-MM-DD-HH}/{id}.json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

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
        return BatchRow(self.id, self.asset, self.partition, self.seq, len(self.changes), self.oldest_change, self.created_at)

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
    """Reads and writes one workflow's batch documents in the state store."""

    def __init__(self, state: StateStore, workflow: str):
        self.state = state
        self.workflow = workflow

    def doc_key(self, asset: str, partition: str, batch: str) -> str:
        if asset == "snapshot":
            return f"{self.workflow}/batches/snapshot/{batch}.json"
        return f"{self.workflow}/batches/changes/{partition[:13]}/{batch}.json"

    def write(self, batch: ChangeBatch) -> None:
        self.state.put_json(self.doc_key(batch.asset, batch.partition, batch.id), batch.to_json())

    def read(self, asset: str, partition: str, batch: str) -> ChangeBatch:
        key = self.doc_key(asset, partition, batch)
        doc = self.state.get_json(key)
        if doc is None:
            raise BatchError(f"{self.workflow}: batch {batch} not found in the state store (key {key})")
        return ChangeBatch.from_json(doc)

    def partition_batches(self, ledger: SyncLedger, asset: str, partition: str) -> list[ChangeBatch]:
        """Every committed batch of one partition in detection order (a backfill re-applies them all).
        The ledger's registry decides, not a listing: a document left by a tick that crashed before
        committing is never applied."""
        return [self.read(asset, partition, row.batch_id) for row in ledger.committed_batches(self.workflow, asset, partition)]
