"""One sensor tick of a sync workflow, without Dagster: list (or receive events, or enumerate a plugin
source), diff with the key index, then commit the key index changes, the change batches (documents included)
and the cursor in one transaction: a crash leaves the old state or the new one, never a cursor ahead of its
batches.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ingest_pipelines.config import S3StoreConfig
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.batches import BATCHES_PER_TICK, ChangeBatch, batch_id, chunk_changes, hour_key
from ingest_pipelines.sync.changes import (
    Change,
    ChangeDetectionError,
    EventMessage,
    PageDiff,
    bucket_is_versioned,
    cdc_diff,
    dedupe_keys,
    event_diff,
    event_keys,
    list_page,
    pass_diff,
    snapshot_diff,
    sweep_diff,
)
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import IndexEntry, SyncLedger
from ingest_pipelines.sync.passes import forget, mark_seen, unseen

log = logging.getLogger(__name__)

#: batches one tick commits at most; the rest waits for the next tick.
MAX_BATCHES_PER_TICK = 5000
#: the least time an SQS message received by a tick stays invisible (3 x tickSeconds when longer: 60 s by default)
MIN_VISIBILITY_SECONDS = 15
#: a pass due this soon (at most a fifth of `interval`) starts at this tick: the tick that comes `interval`
#: after the last pass began may come a few milliseconds early (Dagster's sensor loop), and waiting for the
#: next one would space passes a whole tick apart more (`interval: 5s` passed every 5 or 10 s)
PASS_SLACK_SECONDS = 1.0


def pass_slack(interval: float) -> float:
    return min(PASS_SLACK_SECONDS, interval / 5)


@dataclass
class TickOutcome:
    """What a tick committed: the new cursor and batches, and what it looked at."""

    cursor: SyncCursor
    batches: list[ChangeBatch]
    #: why nothing was committed (None when batches were)
    skip_reason: str | None
    pages: int = 0
    messages: int = 0
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


class _TickState:
    """The tick's view of the key index: the ledger overlaid with what this tick has decided."""

    def __init__(self, ledger: SyncLedger, workflow: str):
        self.ledger = ledger
        self.workflow = workflow
        self.overlay: dict[str, IndexEntry | None] = {}

    def _merge(self, found: dict[str, IndexEntry], after: str | None, upto: str | None) -> dict[str, IndexEntry]:
        for key, entry in self.overlay.items():
            if (after and key <= after) or (upto is not None and key > upto):
                continue
            if entry is None:
                found.pop(key, None)
            else:
                found[key] = entry
        return found

    def range(self, after: str, upto: str | None) -> dict[str, IndexEntry]:
        return self._merge(self.ledger.index_range(self.workflow, after or None, upto), after or None, upto)

    def get(self, keys: list[str]) -> dict[str, IndexEntry]:
        found = self.ledger.index_get(self.workflow, keys)
        # look each key up in the overlay (it grows by a page per listing): O(keys), not O(overlay x keys)
        for key in keys:
            if key in self.overlay:
                entry = self.overlay[key]
                if entry is None:
                    found.pop(key, None)
                else:
                    found[key] = entry
        return found

    def apply(self, diff: PageDiff) -> None:
        for key in diff.deletes:
            self.overlay[key] = None
        for entry in diff.upserts:
            self.overlay[entry.key] = entry

    def upserts(self) -> list[IndexEntry]:
        return [e for e in self.overlay.values() if e is not None]

    def deletes(self) -> list[str]:
        return [k for k, e in self.overlay.items() if e is None]


def sqs_client(config: S3StoreConfig) -> Any:
    from ingest_pipelines.storage.s3 import client_credentials, create_client

    return create_client("sqs", endpoint_url=config.endpoint_url(), region_name=config.region or "us-east-1", **client_credentials(config))


def run_tick(
    workflow: SyncWorkflow,
    source: ObjectStore,
    ledger: SyncLedger,
    *,
    sqs: Any = None,
    clock: Callable[[], float] = time.time,
) -> TickOutcome:
    """Detect changes within the tick budget, write them as batches and commit them with the cursor.

    The scan state lives in the ledger, not in Dagster's cursor: a committed batch is applied by the
    reconciliation (the sensor requests a run while batches are pending), never by a run request alone."""
    started = time.monotonic()
    name = workflow.name
    db_text, _ = ledger.load_scan(name)
    cursor = SyncCursor.from_json(db_text) if db_text else SyncCursor(generation=secrets.token_hex(3))

    tick = cursor.tick + 1
    view = _TickState(ledger, name)
    source_config = source.config
    events = isinstance(source_config, S3StoreConfig) and source_config.changes == "events"
    # a plugin source enumerates in its own order from a saved position: passes, not key ranges
    enumerated = getattr(source, "enumerate_page", None) is not None
    versioned = bucket_is_versioned(source)
    settle = workflow.settle_seconds(source_config.type)
    start_hour = datetime.strptime(workflow.changesStart, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() if workflow.changesStart else 0.0
    written: list[ChangeBatch] = []
    snapshot_open: dict[str, list[Change]] = {}
    hours_open: dict[str, list[Change]] = {}
    counts = {"snapshot": 0, "create": 0, "update": 0, "delete": 0}
    receipts: list[str] = []
    released: list[str] = []
    pages = 0
    note = ""

    def emit(asset: str, partition: str, changes: list[Change]) -> None:
        index = len(written)
        seq = tick * BATCHES_PER_TICK + index
        batch = ChangeBatch(batch_id(name, cursor.generation, tick, index), name, asset, partition, seq, clock(), tuple(changes))  # type: ignore[arg-type]
        written.append(batch)  # committed below, document and all, in the transaction that moves the cursor

    def flush(final: bool) -> None:
        for groups, asset in ((snapshot_open, "snapshot"), (hours_open, "changes")):
            for partition in list(groups):
                chunks = list(chunk_changes(groups[partition], workflow.batchSize))
                if chunks and not final and len(chunks[-1]) < workflow.batchSize:
                    groups[partition] = chunks.pop()
                else:
                    groups[partition] = []
                for chunk in chunks:
                    emit(asset, partition, chunk)
                if not groups[partition]:
                    del groups[partition]

    def take(diff: PageDiff, asset: str, partition: str | None = None) -> None:
        nonlocal cursor
        view.apply(diff)
        for change in diff.changes:
            counts[change.operation] += 1
            if asset == "snapshot":
                snapshot_open.setdefault(partition or "all", []).append(change)
            else:
                # a LastModified ahead of our clock (skew) must not name an hour Dagster has not opened
                hours_open.setdefault(hour_key(min(change.changed_at, clock()), start_hour), []).append(change)
                cursor = cursor.evolve(watermark=cursor.watermark.advance(int(change.changed_at), change.key))
        flush(final=False)

    def budget_left() -> bool:
        pending_batches = len(written) + sum(len(v) for v in snapshot_open.values()) // workflow.batchSize
        if pages == 0 and not receipts:
            return True  # every tick makes progress, however small its budget
        return (
            pages < workflow.maxPagesPerTick
            and time.monotonic() - started < workflow.tickSeconds
            and pending_batches < MAX_BATCHES_PER_TICK
        )

    shards = workflow.shard_keys()
    while budget_left():
        if cursor.mode == "snapshot":
            if cursor.shard >= len(shards):
                # the snapshot counts as the first pass: the next one starts `interval` after it
                cursor = cursor.evolve(mode="cdc", after="", after_version="", shard=0, pass_started=clock())
                note = f"snapshot finished; change capture starts in {workflow.interval:g}s"
                break
            shard = shards[cursor.shard]
            page = list_page(source, workflow.shard_prefix(shard), cursor.after, workflow.pageSize, versioned, cursor.after_version)
            pages += 1
            diff, smax = snapshot_diff(page, view.get(list(page.latest)), cursor.snapshot_max)
            take(diff, "snapshot", shard)
            if page.more:
                cursor = cursor.evolve(after=page.upto, after_version=page.upto_version, snapshot_max=smax)
            else:
                cursor = cursor.evolve(after="", after_version="", shard=cursor.shard + 1, snapshot_max=smax)
            note = f"snapshot: shard {shard!r} resumes after {cursor.after!r}" if page.more else f"snapshot: shard {shard!r} done"
            continue
        if events:
            queue = getattr(source_config, "queueUrl", None)
            if not queue:
                raise ChangeDetectionError(
                    f"source {source_config.name}: `changes: events` needs `queueUrl` (the SQS queue of its S3 events)"
                )
            sqs = sqs or sqs_client(source_config)  # type: ignore[arg-type]
            messages = _receive(sqs, queue, source, workflow, started)
            heads = _heads(source, dedupe_keys(messages), workflow.threads, started, workflow.tickSeconds)
            # a message is done when every key it names was looked at; the rest go back to the queue
            done = [m for m in messages if all(key in heads for key in m.keys)]
            receipts = [m.receipt_handle for m in done]
            released = [m.receipt_handle for m in messages if m not in done]
            take(event_diff(heads, view.get(list(heads)), clock()), "changes")
            note = f"events: {len(done)} message(s), {len(heads)} key(s)" + (
                f", {len(released)} left for the next tick" if released else ""
            )
            break
        now = clock()
        if not cursor.after and cursor.sweep is None:
            # a new pass starts at most every `interval`; the sensor ticks more often (reconciliation, the
            # snapshot, events and a pass in progress go on at every tick)
            wait = cursor.pass_started + workflow.interval - now
            if wait > pass_slack(workflow.interval):
                note = f"change capture: next pass in {wait:.0f}s"
                break
            cursor = cursor.evolve(pass_started=now)
        if enumerated:
            pass_number = cursor.passes + 1
            if cursor.sweep is None:
                page = list_page(source, "", cursor.after, workflow.pageSize, False)
                pages += 1
                mark_seen(ledger, name, pass_number, page.latest)  # before the commit: see sync/passes.py
                take(pass_diff(page, view.get(list(page.latest)), now - settle, now), "changes")
                if page.more:
                    cursor = cursor.evolve(after=page.upto)
                    note = f"change capture: pass {pass_number} resumes at position {cursor.after!r}"
                else:
                    cursor = cursor.evolve(after="", sweep="")
                    note = f"change capture: pass {pass_number} enumerated every element; looking for deletes"
                continue
            candidates, last, more = unseen(ledger, name, pass_number, cursor.sweep, workflow.pageSize)
            pages += 1
            gone, decided = _confirm_gone(source, candidates, workflow.threads, started + workflow.tickSeconds)
            forget(ledger, name, [entry.key for entry in gone])
            take(sweep_diff(gone, now), "changes")
            if decided is not None:  # the tick's time ran out among the candidates: the rest next tick
                cursor = cursor.evolve(sweep=decided)
                note = f"change capture: pass {pass_number} looking for deletes after {decided!r}"
                break
            if more:
                cursor = cursor.evolve(sweep=last)
                note = f"change capture: pass {pass_number} looking for deletes after {last!r}"
                continue
            cursor = cursor.evolve(sweep=None, passes=pass_number)
            note = f"change capture: pass {pass_number} complete"
            break
        page = list_page(source, "", cursor.after, workflow.pageSize, versioned, cursor.after_version)
        pages += 1
        take(cdc_diff(page, view.range(cursor.after, page.upto), now - settle, now), "changes")
        if page.more:
            cursor = cursor.evolve(after=page.upto, after_version=page.upto_version)
            note = f"change capture: pass {cursor.passes + 1} resumes after {cursor.after!r}"
        else:
            cursor = cursor.evolve(after="", after_version="", passes=cursor.passes + 1)
            note = f"change capture: pass {cursor.passes} complete"
            break
    flush(final=True)

    cursor = cursor.evolve(tick=tick)
    ledger.commit_tick(name, cursor.to_json(), [], view.upserts(), view.deletes(), [b.row() for b in written])
    if receipts:
        _delete_messages(sqs, getattr(source_config, "queueUrl", None), receipts)
    if released:
        _release_messages(sqs, getattr(source_config, "queueUrl", None), released)
    skip = None
    if not written:
        skip = f"no changes ({note or 'nothing listed'}; {pages} page(s) listed)"
    return TickOutcome(
        cursor=cursor,
        batches=written,
        skip_reason=skip,
        pages=pages,
        messages=len(receipts),
        seconds=time.monotonic() - started,
        counts=counts,
    )


def _confirm_gone(source: ObjectStore, candidates: list[IndexEntry], threads: int, deadline: float) -> tuple[list[IndexEntry], str | None]:
    """The index entries a pass did not see that are really gone: a plugin that can tell (`exists`) is asked,
    since an API whose pages shift while they are read may skip an element; one that cannot is trusted. Asks in
    chunks until `deadline` (the first chunk always). Returns (gone, None) when every candidate was decided, else
    (gone so far, the last key decided): the sweep resumes after it."""
    exists = getattr(source, "exists", None)
    probe = [entry.key for entry in candidates if not entry.cleaned]
    if exists is None or not probe:
        return list(candidates), None
    answers: dict[str, bool | None] = {}
    chunk = max(1, threads * 4)
    with ThreadPoolExecutor(max_workers=min(threads, len(probe))) as pool:
        for start in range(0, len(probe), chunk):
            if answers and time.monotonic() >= deadline:
                break
            part = probe[start : start + chunk]
            answers.update(zip(part, pool.map(exists, part), strict=True))
    gone: list[IndexEntry] = []
    last_decided = ""
    for entry in candidates:
        if not entry.cleaned and entry.key not in answers:
            return gone, last_decided
        if entry.cleaned or answers[entry.key] is not True:  # None: the plugin cannot tell, the pass decides
            gone.append(entry)
        last_decided = entry.key
    return gone, None


def _receive(sqs: Any, queue: str | None, source: ObjectStore, workflow: SyncWorkflow, started: float) -> list[EventMessage]:
    """Receive event messages until the queue is empty, `pageSize x maxPagesPerTick` messages, or half
    the tick's time (the HEADs need the other half); one receive call always happens."""
    config = source.config
    limit = workflow.pageSize * workflow.maxPagesPerTick
    out: list[EventMessage] = []
    while len(out) < limit and (not out or time.monotonic() - started < workflow.tickSeconds / 2):
        resp = sqs.receive_message(
            QueueUrl=queue,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            # invisible for three ticks: no later tick sees them before they are deleted (one that did would find
            # the version already in the key index: no second change). A message a killed tick held comes back then.
            VisibilityTimeout=int(max(MIN_VISIBILITY_SECONDS, workflow.tickSeconds * 3)),
        )
        messages = resp.get("Messages", [])
        if not messages:
            break
        for message in messages:
            keys = event_keys(message.get("Body", ""), getattr(config, "bucket", ""), config.prefix)
            out.append(EventMessage(message["ReceiptHandle"], tuple(keys)))
    return out


def _heads(source: ObjectStore, keys: list[str], threads: int, started: float, budget: float) -> dict[str, Any]:
    """HEAD keys in chunks until the tick's time is used (the first chunk always): a burst of events
    must not hold a tick past Dagster's sensor timeout. Keys not reached are absent from the result."""
    out: dict[str, Any] = {}
    if not keys:
        return out
    chunk = max(1, threads * 4)
    with ThreadPoolExecutor(max_workers=min(threads, len(keys))) as pool:
        for start in range(0, len(keys), chunk):
            if out and time.monotonic() - started >= budget:
                break
            part = keys[start : start + chunk]
            out.update(zip(part, pool.map(source.head, part), strict=True))
    return out


def _delete_messages(sqs: Any, queue: str | None, receipts: list[str]) -> None:
    for start in range(0, len(receipts), 10):
        entries = [{"Id": str(i), "ReceiptHandle": handle} for i, handle in enumerate(receipts[start : start + 10])]
        try:
            sqs.delete_message_batch(QueueUrl=queue, Entries=entries)
        except Exception as exc:  # redelivery is harmless: events are diffed against the index
            log.warning("deleting %d SQS message(s) failed (they will be seen again): %s", len(entries), exc)


def _release_messages(sqs: Any, queue: str | None, receipts: list[str]) -> None:
    """Make messages this tick had no time for visible again at once (else they wait out the visibility timeout)."""
    for start in range(0, len(receipts), 10):
        entries = [{"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0} for i, h in enumerate(receipts[start : start + 10])]
        try:
            sqs.change_message_visibility_batch(QueueUrl=queue, Entries=entries)
        except Exception as exc:  # they come back after the visibility timeout instead
            log.warning("releasing %d SQS message(s) failed (they return after their visibility timeout): %s", len(entries), exc)
