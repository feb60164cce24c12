"""Helpers for the sync tests: a workflow rig over the moto server (source, destinations, state,
ledger) that runs sensor ticks and applies batches without Dagster."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig, StoreConfig
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import open_store
from ingest_pipelines.sync.apply import ApplyResult, BatchApplier, Destination
from ingest_pipelines.sync.batches import BatchStore, ChangeBatch
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.tick import TickOutcome, run_tick


def s3_config(endpoint: str, name: str, bucket: str, prefix: str = "", **extra: Any) -> S3StoreConfig:
    return S3StoreConfig(name=name, bucket=bucket, prefix=prefix, endpoint=endpoint, region="us-east-1", **extra)


def put(s3: Any, bucket: str, key: str, body: bytes = b"x", **extra: Any) -> dict[str, Any]:
    return s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def bucket_keys(s3: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    """key -> ETag of every object in a bucket (under prefix)."""
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = item["ETag"].strip('"')
    return out


def wait_for_second_start(max_fraction: float = 0.4, timeout: float = 5.0) -> None:
    """Return at the start of a wall-clock second (so a few quick calls share it); bounded poll."""
    deadline = time.monotonic() + timeout
    while time.time() % 1.0 > max_fraction and time.monotonic() < deadline:
        time.sleep(0.01)


class SyncRig:
    """One sync workflow over real stores; `tick()` is the sensor, `apply()` the runs."""

    def __init__(
        self,
        tmp_path: Path,
        source: StoreConfig,
        destinations: list[StoreConfig],
        *,
        ledger_url: str | None = None,
        post: Any = None,
        **workflow: Any,
    ):
        # interval 1 ms: every tick may start a change-capture pass (the default waits 5 min between passes)
        options = {"settleDelay": 0, "batchSize": 8, "interval": 0.001, **workflow}
        self.workflow = SyncWorkflow(
            name=options.pop("name", "wf"), source=source.name, destinations=[d.name for d in destinations], **options
        )
        self.source = open_store(source)
        self.state = StateStore(open_store(FilesystemStoreConfig(name="state", path=str(tmp_path / "state"))))
        self.ledger = SyncLedger(ledger_url or f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        self.destinations = [Destination(d.name, d, open_store(d)) for d in destinations]
        self.applier = BatchApplier(self.workflow, self.source, self.destinations, self.ledger, webhook=post)
        self.batch_store = BatchStore(self.ledger, self.workflow.name, self.state)
        self.cursor: str | None = None
        self.emitted: list[ChangeBatch] = []

    def tick(self, **kwargs: Any) -> TickOutcome:
        outcome = run_tick(self.workflow, self.source, self.ledger, **kwargs)
        self.cursor = outcome.cursor.to_json()
        self.emitted.extend(outcome.batches)
        return outcome

    def changes(self, outcome: TickOutcome) -> list[tuple[str, str]]:
        return [(c.operation, c.key) for b in outcome.batches for c in b.changes]

    def run_until_idle(self, max_ticks: int = 50) -> list[tuple[str, str]]:
        """Tick until a tick finds nothing and CDC has completed a pass; return all changes seen."""
        seen: list[tuple[str, str]] = []
        for _ in range(max_ticks):
            outcome = self.tick()
            seen.extend(self.changes(outcome))
            cursor = SyncCursor.from_json(self.cursor)
            if not outcome.batches and cursor.mode == "cdc" and cursor.after == "" and cursor.passes > 0:
                return seen
        raise AssertionError(f"not idle after {max_ticks} ticks")

    def apply(self, batches: list[ChangeBatch] | None = None) -> ApplyResult:
        total = ApplyResult(batch_id="*")
        for batch in batches if batches is not None else self.emitted:
            total.add_counts(self.applier.apply(self.batch_store.read(batch.asset, batch.partition, batch.id)))
        return total
