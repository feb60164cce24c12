"""Re-listing one snapshot shard and bringing every destination up to date (a snapshot backfill).

Cheap when in sync: one source listing plus one destination listing per chunk; only missing objects are written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from ingest_pipelines.config import dagster_name
from ingest_pipelines.positions import SNAPSHOT, SyncCursor, format_position
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.batches import BATCHES_PER_TICK, ChangeBatch
from ingest_pipelines.sync.changes import Change, bucket_is_versioned, list_page
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger

#: objects per resync chunk (one destination listing and one ledger write each).
RESYNC_CHUNK = 1000


def resync_batches(workflow: SyncWorkflow, shard: str, source: ObjectStore, ledger: SyncLedger, now: float) -> Iterator[ChangeBatch]:
    """The shard's current objects as `snapshot` batches, streamed page by page. Ids derive from the
    content, so re-running the same backfill over an unchanged shard names the same batches; their
    sequence number sorts after everything the sensor has committed (they describe the present)."""
    cursor_text, _ = ledger.load_scan(workflow.name)
    tick = SyncCursor.from_json(cursor_text).tick if cursor_text else 0
    seq = tick * BATCHES_PER_TICK + BATCHES_PER_TICK - 1
    versioned = bucket_is_versioned(source)
    prefix = workflow.shard_prefix(shard)
    after, after_version = "", ""
    pending: list[Change] = []
    smax = 0
    while True:
        page = list_page(source, prefix, after, workflow.pageSize, versioned, after_version)
        for key in sorted(page.latest):
            item = page.latest[key]
            if item.deleted:
                continue
            smax = max(smax, int(item.last_modified))
            position = format_position(key, SNAPSHOT, smax)
            pending.append(Change("snapshot", key, item.last_modified, item.etag, item.size, item.version_id, position))
            if len(pending) >= RESYNC_CHUNK:
                yield _batch(workflow, shard, pending, seq, now)
                pending = []
        if not page.more:
            break
        after, after_version = page.upto or "", page.upto_version
    if pending:
        yield _batch(workflow, shard, pending, seq, now)


def _batch(workflow: SyncWorkflow, shard: str, changes: list[Change], seq: int, now: float) -> ChangeBatch:
    digest = hashlib.sha1()
    for change in changes:
        digest.update(f"{change.key}\0{change.version}\0".encode())
    batch_id = f"{dagster_name(workflow.name)}-resync-{digest.hexdigest()[:16]}"
    return ChangeBatch(batch_id, workflow.name, "snapshot", shard, seq, now, tuple(changes))
