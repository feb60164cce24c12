"""A sync process for the crash test: ticks and applies batches until idle, keeping what Dagster would
keep (the sensor cursor, the requested runs by run key) in files, so kill -9 can hit it anywhere.

Usage: python -m ingest_pipelines_tests.sync_crash_driver <settings.json>
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import open_store
from ingest_pipelines.sync.apply import BatchApplier, Destination
from ingest_pipelines.sync.batches import BatchStore
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.tick import run_tick


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    settings: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    work = Path(settings["work"])
    endpoint = settings["endpoint"]
    source = S3StoreConfig(name="src", bucket="src", endpoint=endpoint)
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
        settleDelay=0,
        webhook=settings["webhook"],
        threads=8,
    )
    ledger = SyncLedger(f"sqlite:///{work / 'ledger.sqlite'}")
    state = StateStore(open_store(FilesystemStoreConfig(name="state", path=str(work / "state"))))
    store = open_store(source)
    applier = BatchApplier(workflow, store, [Destination(d.name, d, open_store(d)) for d in dests], ledger)
    batches = BatchStore(state, workflow.name)
    cursor_file, runs_file = work / "dagster_cursor", work / "runs.json"

    for _ in range(10_000):
        cursor = cursor_file.read_text() if cursor_file.exists() else None
        runs: list[dict[str, Any]] = json.loads(runs_file.read_text()) if runs_file.exists() else []
        outcome = run_tick(workflow, store, state, ledger, cursor)
        known = {r["id"] for r in runs}
        for ref in [*outcome.resend, *(b.ref() for b in outcome.batches)]:
            if ref["id"] not in known:  # Dagster drops a run key it has seen
                runs.append({**ref, "done": False})
                known.add(ref["id"])
        _write_atomic(runs_file, json.dumps(runs))  # the runs exist...
        _write_atomic(cursor_file, outcome.cursor.to_json())  # ...then the cursor is saved
        for run in runs:
            if not run["done"]:
                applier.apply(batches.read(run["asset"], run["partition"], run["id"]))
                run["done"] = True
                _write_atomic(runs_file, json.dumps(runs))
        state_now = SyncCursor.from_json(outcome.cursor.to_json())
        if not outcome.batches and state_now.mode == "cdc" and state_now.after == "" and state_now.passes > 0:
            print("IDLE", flush=True)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
