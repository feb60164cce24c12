"""Applying change batches to every destination of a sync workflow: object copies (copies.py), change
records (record_writes.py), deletes and markers, cleanUp (cleanup.py), the webhook, and the ledger.

Consecutive batches with distinct keys are applied as one group: their changes share the thread pool and one
presence listing per destination, while the ledger rows, cleanUp, the webhook and the batch's "applied" mark
follow per batch in commit order. Idempotent: the ledger skips what a batch already did, a destination that
holds the object is not written again, and a change older than what a destination got since is superseded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.batches import ChangeBatch
from ingest_pipelines.sync.changes import Change
from ingest_pipelines.sync.cleanup import clean_up, holders
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.copies import Held, ObjectCopier, Outcome, sweep_temp_files
from ingest_pipelines.sync.destinations import Destination
from ingest_pipelines.sync.ledger import AppliedRow, SyncLedger
from ingest_pipelines.sync.record_writes import batch_record_files, read_payloads, write_batch_records
from ingest_pipelines.sync.webhook import post_uris

log = logging.getLogger(__name__)

#: a group of batches applied together holds at most this many changes (at least one batch)...
GROUP_CHANGES = 1000
#: ...and, when a records destination holds payloads in memory, about this many bytes.
GROUP_BYTES = 64 * 1024**2


class SyncApplyError(RuntimeError):
    """Some changes of a batch could not be applied; the message lists them (key, destination, reason).
    Everything else of the batch was applied and recorded, so a retry does only the rest."""


@dataclass
class ApplyResult:
    batch_id: str
    objects: int = 0
    bytes: int = 0
    snapshots: int = 0
    creates: int = 0
    updates: int = 0
    deletes: int = 0
    copied: int = 0
    already_present: int = 0
    markers_written: int = 0
    deleted_in_destinations: int = 0
    superseded: int = 0
    source_missing: int = 0
    records_files: list[str] = field(default_factory=list)
    cleaned_up: int = 0
    webhook_status: int | None = None
    uris: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    skipped_already_applied: int = 0
    #: (destination, key) -> (size, etag) this run saw the destination hold (its listing, or the answer
    #: to its CopyObject), or None when it deleted the object: the check needs no second listing for these.
    observed: dict[tuple[str, str], tuple[int, str] | None] = field(default_factory=dict)

    def add_counts(self, other: ApplyResult) -> None:
        for name, value in other.__dict__.items():
            if isinstance(value, int) and not isinstance(value, bool) and name != "webhook_status":
                setattr(self, name, getattr(self, name) + value)
            elif isinstance(value, list):
                getattr(self, name).extend(value)
        self.observed.update(other.observed)
        if other.webhook_status is not None:
            self.webhook_status = other.webhook_status

    def error(self, workflow: str) -> str:
        return f"workflow {workflow}: batch {self.batch_id}: {len(self.failures)} change(s) failed: " + "; ".join(self.failures[:10])


def groups(batches: Iterable[ChangeBatch], max_changes: int = GROUP_CHANGES, max_bytes: int | None = None) -> Iterator[list[ChangeBatch]]:
    """Consecutive batches as groups in which no key appears twice (a put then a delete of one key are
    applied in that order, in two groups), each at most `max_changes` changes / `max_bytes` (one batch at least)."""
    group: list[ChangeBatch] = []
    keys: set[str] = set()
    size = 0
    for batch in batches:
        batch_keys = {c.key for c in batch.changes}
        batch_bytes = sum(c.size for c in batch.changes)
        too_big = len(keys) + len(batch_keys) > max_changes or (max_bytes is not None and size + batch_bytes > max_bytes)
        if group and (too_big or not keys.isdisjoint(batch_keys)):
            yield group
            group, keys, size = [], set(), 0
        group.append(batch)
        keys |= batch_keys
        size += batch_bytes
    if group:
        yield group


class BatchApplier:
    """Applies batches of one workflow. Build once per run; applying a batch again is safe."""

    def __init__(
        self,
        workflow: SyncWorkflow,
        source: ObjectStore,
        destinations: Sequence[Destination],
        ledger: SyncLedger,
        *,
        webhook: Callable[[str, list[str], str], int] | None = None,
    ):
        self.workflow = workflow
        self.source = source
        self.destinations = list(destinations)
        self.ledger = ledger
        self.webhook = webhook or post_uris
        self.copier = ObjectCopier(workflow.name, source, ledger)

    @property
    def group_bytes(self) -> int | None:
        return GROUP_BYTES if any(d.records for d in self.destinations) else None

    def apply(self, batch: ChangeBatch, resync: bool = False) -> ApplyResult:
        """Apply one batch; SyncApplyError (after everything else was applied and recorded) when changes failed."""
        result = self.apply_group([batch], resync)[0]
        if result.failures:
            raise SyncApplyError(result.error(self.workflow.name))
        return result

    def apply_group(self, batches: Sequence[ChangeBatch], resync: bool = False) -> list[ApplyResult]:
        """Apply batches whose keys are distinct (see `groups`) to every destination that lacks them; one
        result per batch, in order, with the failures of each (a batch with failures is not marked applied).
        `resync` (a snapshot backfill): records destinations get records only for versions they never had."""
        wf = self.workflow.name
        results = {batch.id: _counted(batch) for batch in batches}
        done = self.ledger.applied_in_batches(wf, [b.id for b in batches])
        outcomes: dict[str, list[Outcome]] = {batch.id: [] for batch in batches}
        tasks: list[tuple[ChangeBatch, Change, Destination, Held | None]] = []
        records_todo: list[tuple[ChangeBatch, Destination, list[Change]]] = []

        for dest in self.destinations:
            todo_by_batch: list[tuple[ChangeBatch, list[Change]]] = []
            for batch in batches:
                todo = [c for c in batch.changes if (c.key, dest.name) not in done[batch.id]]
                results[batch.id].skipped_already_applied += len(batch.changes) - len(todo)
                if todo:
                    todo_by_batch.append((batch, todo))
            if not todo_by_batch:
                continue
            if dest.records:
                for batch, todo in todo_by_batch:
                    if resync:
                        had = self.ledger.applied_versions(wf, dest.name, [c.key for c in todo])
                        todo = [c for c in todo if (c.key, c.version) not in had]
                        if todo:
                            records_todo.append((batch, dest, todo))
                    else:  # the whole batch: a re-run rewrites the same files with the same records
                        records_todo.append((batch, dest, list(batch.changes)))
                continue
            newer = self.ledger.latest_seq(wf, dest.name, [c.key for _, todo in todo_by_batch for c in todo])
            fresh: list[tuple[ChangeBatch, Change]] = []
            for batch, todo in todo_by_batch:
                for change in todo:
                    if newer.get(change.key, -1) > batch.seq:
                        results[batch.id].superseded += 1  # a later batch already brought this key further
                    else:
                        fresh.append((batch, change))
            present = self.copier.presence(dest, [c for _, c in fresh if c.operation != "delete"])
            tasks.extend((batch, c, dest, present.get(c.key) if present is not None else None) for batch, c in fresh)

        for dest in self.destinations:
            if dest.is_folder:
                # record files live in the prefix folder, copies in the folders of their keys
                sweep_temp_files(dest, ["records"] if dest.records else [c.key for b in batches for c in b.changes])
        threads = self.workflow.threads
        if records_todo:
            for (batch, _dest, _changes), batch_outcomes in zip(records_todo, self._write_records(records_todo), strict=True):
                outcomes[batch.id].extend(batch_outcomes)
        if tasks:
            with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
                for (batch, *_), outcome in zip(tasks, pool.map(lambda task: self.copier.apply_one(*task[1:]), tasks), strict=True):
                    outcomes[batch.id].append(outcome)

        rows: list[AppliedRow] = []
        for batch in batches:
            rows.extend(_tally(batch, outcomes[batch.id], results[batch.id]))
        self.ledger.record_applied(wf, rows)

        applied: list[str] = []
        for batch in batches:
            result = results[batch.id]
            if self.workflow.cleanUp:
                held = holders(done[batch.id], ((o.change.key, o.dest.name, o.kind) for o in outcomes[batch.id] if o.error is None))
                result.cleaned_up = clean_up(wf, self.source, self.ledger, batch, held, {d.name for d in self.destinations}, threads)
            if result.failures:
                continue  # not applied: the webhook and the mark wait for a clean attempt
            if self.workflow.webhook and not self.ledger.webhook_sent(wf, batch.id):
                # from the ledger, not from this run: a run that died after recording its changes but
                # before the POST leaves nothing for the re-run to do, yet the call is still owed
                uris = self._batch_uris(batch)
                if uris:
                    result.webhook_status = self.webhook(self.workflow.webhook, uris, batch.id)
                    self.ledger.record_webhook(wf, batch.id, result.webhook_status)
            applied.append(batch.id)
        self.ledger.mark_batches_applied(wf, applied)
        return [results[batch.id] for batch in batches]

    def _write_records(self, todo: list[tuple[ChangeBatch, Destination, list[Change]]]) -> list[list[Outcome]]:
        """Every (batch, records destination) of the group: payloads read once per change, files written concurrently."""
        needed: dict[tuple[str, str], Change] = {}
        for batch, _, changes in todo:
            for change in changes:
                needed.setdefault((batch.id, change.key), change)
        payloads = dict(zip(needed, read_payloads(self.source, list(needed.values()), self.workflow.threads), strict=True))

        def write(item: tuple[ChangeBatch, Destination, list[Change]]) -> list[Outcome]:
            batch, dest, changes = item
            readable, contents, skipped = [], [], []
            for change in changes:
                payload = payloads[(batch.id, change.key)]
                if isinstance(payload, str):  # the version is gone: the later batch records its successor
                    skipped.append(Outcome(change, dest, payload))
                else:
                    readable.append(change)
                    contents.append(payload)
            try:
                uris = write_batch_records(dest, batch, readable, contents)
            except Exception as exc:  # the batch fails (and is retried); other batches go on
                log.warning("%s: batch %s -> %s: writing records failed: %s", self.workflow.name, batch.id, dest.name, exc)
                error = f"{type(exc).__name__}: {exc}"
                return [Outcome(c, dest, "failed", error=error) for c in changes]
            outcomes = [Outcome(c, dest, "records") for c in readable]
            if outcomes:
                outcomes[0].uri = "\n".join(uris)  # the record files, reported once per batch
            return outcomes + skipped

        with ThreadPoolExecutor(max_workers=max(1, min(self.workflow.threads, len(todo)))) as pool:
            return list(pool.map(write, todo))

    def _batch_uris(self, batch: ChangeBatch) -> list[str]:
        """Destination URIs of everything this batch stored or found present (record destinations:
        the batch's record files), sorted, so a repeated call carries the same body."""
        applied = self.ledger.applied_in_batch(self.workflow.name, batch.id)
        deleted = {c.key for c in batch.changes if c.operation == "delete"}
        uris: set[str] = set()
        for dest in self.destinations:
            mine = {key for key, name in applied if name == dest.name}
            if not mine:
                continue
            if dest.records:
                uris.update(dest.store.uri(key) for key in batch_record_files(dest, batch.id))
            else:
                uris.update(dest.store.uri(key) for key in mine - deleted)
        return sorted(uris)


def _counted(batch: ChangeBatch) -> ApplyResult:
    result = ApplyResult(batch_id=batch.id)
    for change in batch.changes:
        setattr(result, change.operation + "s", getattr(result, change.operation + "s") + 1)
        if change.operation != "delete":
            result.objects += 1
            result.bytes += change.size
    return result


def _tally(batch: ChangeBatch, outcomes: list[Outcome], result: ApplyResult) -> list[AppliedRow]:
    """Count a batch's outcomes into its result; the ledger rows of what was applied."""
    rows = []
    for outcome in outcomes:
        if outcome.error:
            result.failures.append(f"{outcome.change.key} -> {outcome.dest.name}: {outcome.error}")
            continue
        if outcome.kind == "superseded":
            result.superseded += 1
            continue
        if outcome.kind == "source-missing":
            result.source_missing += 1
            continue
        if outcome.kind == "copied":
            result.copied += 1
        elif outcome.kind in ("present", "marker-only"):
            result.already_present += 1
        if outcome.kind == "marker-only" or (outcome.kind == "copied" and outcome.dest.markers):
            result.markers_written += 1
        if outcome.kind == "deleted":
            result.deleted_in_destinations += 1
        if outcome.kind == "records":
            if outcome.uri:
                result.records_files.extend(outcome.uri.split("\n"))
                result.uris.extend(outcome.uri.split("\n"))
        elif outcome.uri:
            result.uris.append(outcome.uri)
        if outcome.seen is not False:
            result.observed[(outcome.dest.name, outcome.change.key)] = outcome.seen  # type: ignore[assignment]
        version = outcome.change.version if outcome.change.operation != "delete" else f"delete:{outcome.change.version}"
        rows.append(AppliedRow(batch.id, outcome.change.key, outcome.dest.name, version, outcome.change.operation, batch.seq))
    return rows
