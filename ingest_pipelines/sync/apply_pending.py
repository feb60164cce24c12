"""What one run of a sync workflow does, without Dagster: apply every committed batch that is due, in commit
order, group by group, until none is left or the run's budget (`runSeconds`, `maxBatchesPerRun`) is spent;
count and check the result per partition (snapshot shard or hour) it touched.

Attempts are recorded before anything is written; a failed batch keeps its error for the sensor and the check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.sync.apply import ApplyResult, BatchApplier, groups
from ingest_pipelines.sync.batches import BatchError, BatchStore, ChangeBatch
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import PendingBatch, SyncLedger
from ingest_pipelines.sync.reconcile import pending_state
from ingest_pipelines.sync.verify import CheckOutcome, destinations_match, records_unique

log = logging.getLogger(__name__)

#: batch documents read ahead of the applier (they are small; reading them is one GET each on S3 state).
READ_AHEAD = 512


@dataclass
class PartitionReport:
    """What a run applied in one partition (a snapshot shard or an hour): counts, batches, positions, checks."""

    asset: str
    partition: str
    total: ApplyResult = field(default_factory=lambda: ApplyResult(batch_id="*"))
    batches: list[ChangeBatch] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    destinations_check: CheckOutcome = field(default_factory=lambda: CheckOutcome(True, ""))
    records_check: CheckOutcome = field(default_factory=lambda: CheckOutcome(True, ""))

    @property
    def oldest_change(self) -> float | None:
        return min((b.oldest_change for b in self.batches), default=None)


@dataclass
class RunReport:
    partitions: dict[tuple[str, str], PartitionReport] = field(default_factory=dict)
    #: batch id -> error, for batches whose attempt in this run failed
    failed: dict[str, str] = field(default_factory=dict)
    applied: int = 0
    #: why the run stopped before every due batch was applied ("" when none was left)
    stopped: str = ""
    #: the oldest change not applied when the run started (for lag_seconds)
    oldest_pending_change: float | None = None

    def partition(self, asset: str, partition: str) -> PartitionReport:
        return self.partitions.setdefault((asset, partition), PartitionReport(asset, partition))


class PendingApplier:
    """Applies batches of one workflow in commit order and reports per partition."""

    def __init__(
        self,
        workflow: SyncWorkflow,
        source: ObjectStore,
        applier: BatchApplier,
        ledger: SyncLedger,
        batch_store: BatchStore,
        *,
        clock: Callable[[], float] = time.time,
        progress: Callable[[str], None] | None = None,
    ):
        self.workflow = workflow
        self.source = source
        self.applier = applier
        self.ledger = ledger
        self.batch_store = batch_store
        self.clock = clock
        self.progress = progress or (lambda message: log.info("%s", message))

    def run(self) -> RunReport:
        """Apply due batches until none is left (batches committed meanwhile included) or the budget is spent."""
        workflow = self.workflow
        report = RunReport()
        started = time.monotonic()
        tried: set[str] = set()
        last_note = started
        first = True
        while True:
            state = pending_state(self.ledger, workflow, self.clock(), in_run=True)
            if first:
                report.oldest_pending_change = min((b.oldest_change for b in state.pending), default=None)
                first = False
            # a batch that failed in this run waits for a later run (after its backoff), not for this loop
            due = [b for b in state.due if b.batch_id not in tried]
            if not due:
                return report
            for chunk in _chunks(due, READ_AHEAD):
                documents = self._read(chunk, report)
                for group in groups(documents, max_bytes=self.applier.group_bytes):
                    if self._out_of_budget(report, started):
                        return report
                    tried.update(b.id for b in group)
                    self.apply_group(group, report)
                    if time.monotonic() - last_note > 30:
                        last_note = time.monotonic()
                        self.progress(f"{workflow.name}: {report.applied} batch(es) applied, {len(report.failed)} failed so far")

    def apply_group(self, group: Sequence[ChangeBatch], report: RunReport, resync: bool = False) -> None:
        """Apply one group (attempts recorded first), then check it and count it into its partitions."""
        self.ledger.start_attempts(self.workflow.name, [b.id for b in group])
        try:
            results = self.applier.apply_group(group, resync=resync)
        except Exception as exc:  # the whole group failed (e.g. the ledger or a destination listing)
            error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: batches %s..%s failed: %s", self.workflow.name, group[0].id, group[-1].id, error)
            self.ledger.record_failures(self.workflow.name, {b.id: error for b in group})
            for batch in group:
                report.failed[batch.id] = error
                report.partition(batch.asset, batch.partition).failed[batch.id] = error
            return
        failures = {r.batch_id: r.error(self.workflow.name) for r in results if r.failures}
        if failures:
            self.ledger.record_failures(self.workflow.name, failures)
            report.failed.update(failures)
        observed: dict[tuple[str, str], tuple[int, str] | None] = {}
        for result in results:
            observed.update(result.observed)
        by_partition: dict[tuple[str, str], list[ChangeBatch]] = {}
        for batch in group:
            by_partition.setdefault((batch.asset, batch.partition), []).append(batch)
        destinations = self.applier.destinations
        for (asset, partition), batches in by_partition.items():
            part = report.partition(asset, partition)
            part.destinations_check = part.destinations_check.merge(
                destinations_match(self.workflow.name, batches, self.source, destinations, self.ledger, observed)
            )
            part.records_check = part.records_check.merge(records_unique(batches, destinations, self.ledger, self.workflow.name))
        for batch, result in zip(group, results, strict=True):
            part = report.partition(batch.asset, batch.partition)
            part.batches.append(batch)
            part.total.add_counts(result)
            if batch.id in failures:
                part.failed[batch.id] = failures[batch.id]
            else:
                report.applied += 1

    def _read(self, pending: list[PendingBatch], report: RunReport) -> list[ChangeBatch]:
        """The batches (one ledger query); one that cannot be read fails (and is retried) alone."""
        try:
            found: dict[str, ChangeBatch | str] = dict(self.batch_store.read_many((b.asset, b.partition, b.batch_id) for b in pending))
        except (BatchError, OSError, ValueError, KeyError):
            found = {}
            for batch in pending:
                try:
                    found[batch.batch_id] = self.batch_store.read(batch.asset, batch.partition, batch.batch_id)
                except (BatchError, OSError, ValueError, KeyError) as exc:
                    found[batch.batch_id] = f"{type(exc).__name__}: {exc}"
        documents = [found[b.batch_id] for b in pending]
        out = []
        errors: dict[str, str] = {}
        for batch, document in zip(pending, documents, strict=True):
            if isinstance(document, str):
                errors[batch.batch_id] = document
                report.failed[batch.batch_id] = document
                report.partition(batch.asset, batch.partition).failed[batch.batch_id] = document
            else:
                out.append(document)
        if errors:
            self.ledger.start_attempts(self.workflow.name, errors)
            self.ledger.record_failures(self.workflow.name, errors)
        return out

    def _out_of_budget(self, report: RunReport, started: float) -> bool:
        workflow = self.workflow
        if workflow.maxBatchesPerRun and report.applied + len(report.failed) >= workflow.maxBatchesPerRun:
            report.stopped = f"maxBatchesPerRun ({workflow.maxBatchesPerRun}) reached"
            return True
        if time.monotonic() - started >= workflow.runSeconds:
            report.stopped = f"runSeconds ({workflow.runSeconds:g}s) used"
            return True
        return False


def apply_batches(pending_applier: PendingApplier, batches: Iterable[ChangeBatch], resync: bool = False) -> RunReport:
    """Apply given batches (a backfill: a partition's batches, or a re-listed shard), whatever their attempts."""
    report = RunReport()
    for group in groups(batches, max_bytes=pending_applier.applier.group_bytes):
        pending_applier.apply_group(group, report, resync=resync)
    return report


def _chunks(items: list[PendingBatch], size: int) -> Iterable[list[PendingBatch]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
