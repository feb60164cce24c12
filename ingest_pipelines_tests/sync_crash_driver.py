"""A sync process for the crash test: ticks (commit batches) and applies every pending batch as a run
does, until idle; kill -9 can hit it anywhere. The ledger alone says what is pending after a restart.

Usage: python -m ingest_pipelines_tests.sync_crash_driver <settings.json>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import open_store
from ingest_pipelines.sync.apply import BatchApplier
from ingest_pipelines.sync.apply_pending import PendingApplier
from ingest_pipelines.sync.batches import BatchStore
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.destinations import Destination
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.tick import run_tick


def main(argv: list[str]) -> int:
    settings: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    work = Path(settings["work"])
    endpoint = settings["endpoint"]
    events = {"changes": "events", "queueUrl": settings["queue_url"]} if settings.get("queue_url") else {}
    source = S3StoreConfig(name="src", bucket="src", endpoint=endpoint, **events)
    dests = [
        S3StoreConfig(name="mirror", bucket="dst", endpoint=endpoint, metafilesPrefix="meta/"),
        FilesystemStoreConfig(name="folder", path=str(work / "folder")),
    ]
    for extra in settings.get("extra_destinations", []):
        from ingest_pipelines.config import DESTINATION_TYPES, load_kind_modules

        load_kind_modules()
        dests.append(DESTINATION_TYPES[extra["type"]].model_validate(extra))
    workflow = SyncWorkflow(
        name="crash",
        source="src",
        destinations=[d.name for d in dests],
        batchSize=settings["batch_size"],
        pageSize=settings["page_size"],
        maxPagesPerTick=2,
        # short ticks: the SQS messages a killed tick held come back after 3 x tickSeconds (15 s), not 60 s
        tickSeconds=3,
        settleDelay=0,
        webhook=settings.get("webhook"),
        threads=8,
        retryDelay="100ms",
        interval="1ms",  # a pass at every tick  # a batch a kill interrupted is tried again at once (the default waits 30 s)
    )
    ledger = SyncLedger(f"sqlite:///{work / 'ledger.sqlite'}")
    state = StateStore(open_store(FilesystemStoreConfig(name="state", path=str(work / "state"))))
    store = open_store(source)
    applier = BatchApplier(workflow, store, [Destination(d.name, d, open_store(d)) for d in dests], ledger)
    pending = PendingApplier(workflow, store, applier, ledger, BatchStore(ledger, workflow.name, state))

    for _ in range(10_000):
        outcome = run_tick(workflow, store, ledger)
        report = pending.run()
        if report.failed:
            print("FAILED", report.failed, flush=True)
        cursor = SyncCursor.from_json(outcome.cursor.to_json())
        idle = not outcome.batches and not ledger.pending_batches(workflow.name) and cursor.mode == "cdc"
        if events and idle and outcome.messages == 0 and not settings.get("keep_running"):
            print("IDLE", flush=True)
            return 0
        if idle and cursor.after == "" and cursor.passes > 0:
            print("IDLE", flush=True)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
