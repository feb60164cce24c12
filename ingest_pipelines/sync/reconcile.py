"""Reconciliation of a sync workflow, without Dagster: which committed batches a run should apply now,
which wait for their retry, which are stuck, and what the sensor says about it.

The ledger is the truth: a batch is pending until a run has applied it, whatever happened to earlier runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingest_pipelines.retries import RetryPolicy
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import PendingBatch, SyncLedger


@dataclass(frozen=True)
class BatchStatus:
    batch: PendingBatch
    #: "due" (a run may apply it now), "waiting" (its retry is not due yet), "exhausted" (maxAttempts used up)
    state: str
    next_attempt_at: float = 0.0


@dataclass
class PendingState:
    """Every unapplied batch of a workflow, sorted into due / waiting / exhausted."""

    statuses: list[BatchStatus] = field(default_factory=list)

    @property
    def due(self) -> list[PendingBatch]:
        return [s.batch for s in self.statuses if s.state == "due"]

    @property
    def waiting(self) -> list[BatchStatus]:
        return [s for s in self.statuses if s.state == "waiting"]

    @property
    def exhausted(self) -> list[PendingBatch]:
        return [s.batch for s in self.statuses if s.state == "exhausted"]

    @property
    def pending(self) -> list[PendingBatch]:
        return [s.batch for s in self.statuses]

    def of_asset(self, asset: str) -> PendingState:
        return PendingState([s for s in self.statuses if s.batch.asset == asset])

    def last_error(self) -> str | None:
        """The error of the most recently failed batch."""
        failed = [s.batch for s in self.statuses if s.batch.last_error]
        if not failed:
            return None
        return max(failed, key=lambda b: b.last_attempt_at or 0.0).last_error


def pending_state(ledger: SyncLedger, workflow: SyncWorkflow, now: float | None = None, *, in_run: bool = False) -> PendingState:
    """The unapplied batches sorted into due / waiting / exhausted.

    The sensor (no run in progress) counts a requested run that never started the batch as a try;
    a run counts only the attempts runs made (it is the requested run), so a batch is due for it when
    it was never attempted or its last attempt's backoff has passed."""
    now = time.time() if now is None else now
    policy = RetryPolicy.of(workflow)
    statuses = []
    for batch in ledger.pending_batches(workflow.name):
        tries = batch.attempts if in_run else batch.tries
        if policy.exhausted(tries):
            statuses.append(BatchStatus(batch, "exhausted"))
            continue
        due_at = policy.next_attempt_at(tries, batch.last_attempt_at if in_run else batch.last_try_at)
        statuses.append(BatchStatus(batch, "due" if due_at <= now else "waiting", due_at))
    return PendingState(statuses)


def max_lag(workflow: SyncWorkflow) -> float:
    """`maxLag`, default 10 x interval and at least 15 min."""
    return workflow.maxLag if workflow.maxLag is not None else max(10 * workflow.interval, 900.0)


@dataclass(frozen=True)
class Health:
    """Whether a workflow (or one of its assets) converges: no batch past maxAttempts, none unapplied beyond maxLag."""

    passed: bool
    description: str
    pending: int = 0
    exhausted: int = 0
    oldest_batch: str = ""
    oldest_age_seconds: float = 0.0
    last_error: str = ""

    def metadata(self) -> dict[str, object]:
        return {
            "pending_batches": self.pending,
            "exhausted_batches": self.exhausted,
            "oldest_batch": self.oldest_batch,
            "oldest_age_seconds": round(self.oldest_age_seconds, 1),
            "last_error": self.last_error[:1000],
        }


def health(state: PendingState, workflow: SyncWorkflow, now: float | None = None) -> Health:
    now = time.time() if now is None else now
    lag_limit = max_lag(workflow)
    pending = state.pending
    if not pending:
        return Health(True, "every committed batch is applied")
    oldest = pending[0]
    age = max(0.0, now - oldest.created_at)
    error = state.last_error() or ""
    common = {"pending": len(pending), "oldest_batch": oldest.batch_id, "oldest_age_seconds": age, "last_error": error}
    exhausted = state.exhausted
    if exhausted:
        first = exhausted[0]
        text = (
            f"{len(exhausted)} batch(es) failed {workflow.maxAttempts} attempts and are no longer retried, "
            f"first {first.batch_id} (committed {_when(first.created_at)}): {first.last_error or 'no error recorded'}"
        )
        return Health(False, text, exhausted=len(exhausted), **common)  # type: ignore[arg-type]
    stale = [b for b in pending if now - b.created_at > lag_limit]
    if stale:
        text = f"{len(pending)} batch(es) unapplied for {_minutes(age)}, oldest {oldest.batch_id}" + (f": {error}" if error else "")
        return Health(False, text, **common)  # type: ignore[arg-type]
    return Health(True, f"{len(pending)} batch(es) pending, oldest {_minutes(age)} (maxLag {_minutes(lag_limit)})", **common)  # type: ignore[arg-type]


def _minutes(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def describe_waiting(state: PendingState, workflow: SyncWorkflow, now: float | None = None) -> str:
    """The sensor's skip reason while every pending batch waits for its retry or is exhausted."""
    now = time.time() if now is None else now
    parts = []
    waiting = state.waiting
    if waiting:
        first = min(waiting, key=lambda s: s.next_attempt_at)
        parts.append(
            f"{len(waiting)} batch(es) wait for a retry, next {first.batch.batch_id} in {_minutes(first.next_attempt_at - now)} "
            f"(attempt {first.batch.tries + 1}" + (f" of {workflow.maxAttempts}" if workflow.maxAttempts else "") + ")"
        )
    exhausted = state.exhausted
    if exhausted:
        parts.append(f"{len(exhausted)} batch(es) exhausted maxAttempts {workflow.maxAttempts}")
    error = state.last_error()
    return "; ".join(parts) + (f": {error}" if error else "")
