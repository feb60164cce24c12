"""connylabs' `cleanUp`: once every destination holds an object's version, delete it from the source
(only while the source still has that ETag: a newer object is not ours to delete). Idempotent.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.batches import ChangeBatch
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.ledger import SyncLedger

#: outcomes that mean "the destination holds this version now"
HELD = ("copied", "present", "marker-only", "records")


def clean_up(
    workflow: str,
    source: ObjectStore,
    ledger: SyncLedger,
    batch: ChangeBatch,
    held_by: dict[str, set[str]],
    destinations: set[str],
    threads: int,
) -> int:
    """Delete the batch's source objects that every destination holds (`held_by`: key -> destination names)."""
    ready = [c for c in batch.changes if c.operation != "delete" and held_by.get(c.key, set()) >= destinations]
    if not ready:
        return 0
    # the key index learns first: a listing between the two steps must not see a "delete"
    ledger.mark_cleaned(workflow, [(c.key, c.etag) for c in ready])

    def remove(change: Change) -> int:
        clean_up_element = getattr(source, "clean_up_element", None)
        if clean_up_element is not None:  # connylabs' CleanUp through the plugin: idempotent, the plugin decides
            return int(clean_up_element(change.key, change.version))
        current = source.head(change.key)
        if current is None or current.etag != change.etag:
            return 0  # gone already, or a newer object arrived meanwhile
        source.delete(change.key)
        return 1

    with ThreadPoolExecutor(max_workers=min(threads, len(ready))) as pool:
        return sum(pool.map(remove, ready))


def holders(done: Iterable[tuple[str, str]], outcomes: Iterable[tuple[str, str, str]]) -> dict[str, set[str]]:
    """key -> destinations holding it: pairs an earlier run recorded, plus this run's (key, destination, kind)."""
    held: dict[str, set[str]] = {}
    for key, dest in done:
        held.setdefault(key, set()).add(dest)
    for key, dest, kind in outcomes:
        if kind in HELD:
            held.setdefault(key, set()).add(dest)
    return held
