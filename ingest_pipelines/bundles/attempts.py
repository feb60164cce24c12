"""Reconciliation of bundle jobs: every job that is not complete gets a run, is waiting for one, or ends FAILED
with the reason. Decided from the job store and the runs of the orchestrator (seen through `RunsView`).

A job is retried (up to `maxAttempts`, backoff from `retryDelay`) when its run died or could not be launched for a
reason that is not the bundle's content; a rejected bundle was already marked FAILED by its run and is not seen
here. A run not started within `launchTimeout` is canceled and its job FAILED: nothing dequeues it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from ingest_pipelines.bundles.archive import ArchiveLayout, clear_job
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import TASK_INGEST_METADATA, TASK_OPEN_TAR
from ingest_pipelines.bundles.ingest import committed
from ingest_pipelines.bundles.jobs import JobState, JobStore, StaleAttempt
from ingest_pipelines.retries import RetryPolicy
from ingest_pipelines.storage import ObjectStore, StoreError

log = logging.getLogger(__name__)

#: run statuses as reconciliation groups them
QUEUED, UNSUBMITTED, RUNNING, SUCCEEDED, FAILED, CANCELED = "queued", "unsubmitted", "running", "succeeded", "failed", "canceled"
ACTIVE = (QUEUED, UNSUBMITTED, RUNNING)

#: how long a claimed attempt may go without a run before the claim counts as lost (the sensor's run is created
#: just after its tick; the front door submits at once), at most `launchTimeout`
CLAIM_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class RunView:
    """One run of a job as reconciliation needs it."""

    run_id: str
    status: str
    #: unix seconds
    created: float
    #: the job attempt the run was requested for (None: launched by hand, e.g. from the UI)
    attempt: int | None = None
    #: the code location the run was submitted to
    location: str | None = None


class RunsView(Protocol):
    """The orchestrator's side (Dagster in defs/bundles/reconcile.py)."""

    def runs(self, job: JobState) -> list[RunView]:
        """Runs of this job, newest first."""
        ...

    def failure_message(self, run: RunView) -> str: ...

    def started_since(self, timestamp: float, location: str | None) -> bool:
        """Whether a run of the workflow in code location `location` was started (dequeued) after `timestamp`:
        the queue is moving for that location (runs of another location starting say nothing about this one)."""
        ...

    def cancel(self, run: RunView, reason: str) -> None:
        """Cancel a run that was never started (or mark a never-submitted run failed)."""
        ...


class LaunchFailed(RuntimeError):
    """The run of an attempt could not be requested (code location not loadable, instance unreachable)."""


#: launch(job) requests one run for the job's current attempt; returns its run id, or None when the run is
#: created later (a sensor's run request). Raises LaunchFailed.
Launch = Callable[[JobState], "str | None"]


@dataclass
class ReconcileReport:
    launched: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)
    retrying: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    #: (job id, what it waits for) of jobs waiting for a retry or a run, for the tick log
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.launched)} launched, {len(self.waiting)} in progress, {len(self.retrying)} waiting for a retry, "
            f"{len(self.failed)} FAILED"
        )


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None, microsecond=0)


def _seconds(value: float) -> str:
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g}m"
    return f"{value:g}s"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


class BundleReconciler:
    """Looks after the unfinished jobs of one bundle workflow; safe to run in several processes at once
    (every change is a compare-and-set on the job's attempt)."""

    def __init__(
        self,
        workflow: BundleWorkflow,
        jobs: JobStore,
        source: ObjectStore,
        archive: ObjectStore,
        runs: RunsView,
        clock: Callable[[], float] | None = None,
    ):
        self.workflow = workflow
        self.jobs = jobs
        self.source = source
        self.archive = archive
        self.runs = runs
        self.policy = RetryPolicy.of(workflow)
        self.launch_timeout = float(workflow.launchTimeout)
        self.claim_grace = min(CLAIM_GRACE_SECONDS, self.launch_timeout)
        self.clock = clock or time.time

    # ------------------------------------------------------------------ one pass

    def reconcile(self, launch: Launch, limit: int | None = None, deadline: float | None = None) -> ReconcileReport:
        """One pass over the workflow's unfinished jobs, oldest first: at most `limit` launches, and until
        `deadline` (time.monotonic()); the jobs left over are looked at on the next pass."""
        report = ReconcileReport()
        for job in self.jobs.unfinished(self.workflow.name):
            if (limit is not None and len(report.launched) >= limit) or (deadline is not None and time.monotonic() > deadline):
                report.waiting.append(job.job_id)
                continue
            try:
                self.reconcile_job(job, launch, report)
            except StoreError as exc:
                # the archive or drop location is unreachable: nothing decided for this job, next pass tries again
                log.warning("job %s: not reconciled this time: %s", job.job_id, exc)
                report.waiting.append(job.job_id)
        return report

    def reconcile_job(self, job: JobState, launch: Launch, report: ReconcileReport) -> None:
        now = self.clock()
        runs = self.runs.runs(job)
        active = [run for run in runs if run.status in ACTIVE]
        if active:
            self._watch_active(job, active, now, report)
            return
        if job.attempt == 0:
            self._launch(job, launch, report, note=None)
            return
        if job.retry_at is not None:
            due = job.retry_at.replace(tzinfo=UTC).timestamp()
            if now < due:
                report.retrying.append(job.job_id)
                report.notes.append(f"job {job.job_id}: attempt {job.attempt + 1} due at {_when(job.retry_at)}")
                return
            self._launch(job, launch, report, note=self._retry_note(job))
            return
        current = [run for run in runs if run.attempt == job.attempt]
        if not current:
            claimed = job.attempt_at.replace(tzinfo=UTC).timestamp() if job.attempt_at else 0.0
            if now - claimed < self.claim_grace:
                report.waiting.append(job.job_id)  # the claimer is creating the run
                return
            reason = f"no run was created for attempt {job.attempt} (the process that requested it stopped)"
        else:
            run = current[0]
            if run.status == SUCCEEDED:
                reason = f"run {run.run_id} succeeded but the job did not complete"
            else:
                verb = "was canceled" if run.status == CANCELED else "failed"
                reason = f"run {run.run_id} {verb}: {self.runs.failure_message(run)}"
        self._attempt_failed(job, reason, now, report)

    # ------------------------------------------------------------------ decisions

    def _watch_active(self, job: JobState, active: list[RunView], now: float, report: ReconcileReport) -> None:
        for run in active:
            age = now - run.created
            if run.status == UNSUBMITTED and age > self.claim_grace:
                # created and never submitted (the process that made it stopped): it will never start by itself
                self.runs.cancel(run, "this run was created but never submitted to the run queue")
                report.waiting.append(job.job_id)
                return
            if run.status == QUEUED and age > self.launch_timeout and not self.runs.started_since(run.created, run.location):
                location = f"code location {run.location!r}" if run.location else "this workflow's code location"
                reason = (
                    f"run {run.run_id} was not started within {_seconds(self.launch_timeout)}: is a dagster-daemon running with {location}?"
                )
                self.runs.cancel(run, reason)
                if self.jobs.give_up(job.job_id, job.attempt, reason + " (the run was canceled)"):
                    self._clear(job)
                    log.warning("job %s FAILED: %s", job.job_id, reason)
                    report.failed.append(job.job_id)
                return
        report.waiting.append(job.job_id)

    def _launch(self, job: JobState, launch: Launch, report: ReconcileReport, note: str | None) -> None:
        missing = self._drop_object_missing(job)
        if missing:
            if self.jobs.give_up(job.job_id, job.attempt, missing):
                self._clear(job)
                report.failed.append(job.job_id)
            return
        claimed = self.jobs.claim(job.job_id, job.attempt, exception=note, task=TASK_OPEN_TAR if job.attempt == 0 else None)
        if claimed is None:
            report.waiting.append(job.job_id)  # another reconciler was faster, or the job finished
            return
        self.launch_claimed(claimed, launch, report)

    def launch_claimed(self, job: JobState, launch: Launch, report: ReconcileReport | None = None) -> JobState:
        """Request the run of a claimed attempt; a launch failure counts as that attempt failing."""
        report = report if report is not None else ReconcileReport()
        try:
            run_id = launch(job)
        except LaunchFailed as exc:
            if any(run.attempt == job.attempt for run in self.runs.runs(job)):
                # the run was created before the error (submitting it failed half-way): it is watched like any other
                # run; one that never reaches the queue is failed after the claim grace and the attempt retried
                log.warning("job %s: requesting attempt %d raised %s, but its run exists", job.job_id, job.attempt, exc)
                report.launched.append(job.job_id)
                return self.jobs.get(job.job_id)
            self._attempt_failed(job, f"launching the run failed: {exc}", self.clock(), report)
            return self.jobs.get(job.job_id)
        if run_id:
            self.jobs.set_run(job.job_id, job.attempt, run_id)
        report.launched.append(job.job_id)
        return self.jobs.get(job.job_id)

    def _attempt_failed(self, job: JobState, reason: str, now: float, report: ReconcileReport) -> None:
        attempt = job.attempt
        layout = ArchiveLayout(job.job_id, self.workflow.stagingPrefix)
        if committed(self.archive, layout):
            # the run wrote metadata.json (every file in place) and died before the job said so: it is done
            try:
                self.jobs.update(job.job_id, attempt=attempt, task=TASK_INGEST_METADATA, task_percent=100.0, exception="")
            except StaleAttempt:
                return
            log.info("job %s: attempt %d had committed the archive folder before its run ended (%s)", job.job_id, attempt, reason)
            report.waiting.append(job.job_id)
            return
        if self.policy.exhausted(attempt):
            limit = self.policy.max_attempts
            message = f"gave up after {attempt} attempt{'s' if attempt != 1 else ''} (maxAttempts {limit}); attempt {attempt}: {reason}"
            if self.jobs.give_up(job.job_id, attempt, message):
                self._clear(job)
                log.warning("job %s FAILED: %s", job.job_id, message)
                report.failed.append(job.job_id)
            return
        retry_at = _utc(now + self.policy.delay(attempt))
        limit = "" if self.policy.max_attempts == 0 else f" of {self.policy.max_attempts}"
        message = f"attempt {attempt}{limit} failed at {_when(_utc(now))}: {reason}; next attempt at {_when(retry_at)}"
        if self.jobs.attempt_failed(job.job_id, attempt, message, retry_at):
            # what the dead attempt wrote goes now: no incomplete folder waits in the archive for the retry
            self._clear(job)
            log.info("job %s: %s", job.job_id, message)
            report.retrying.append(job.job_id)

    def _retry_note(self, job: JobState) -> str:
        limit = "" if self.policy.max_attempts == 0 else f" of {self.policy.max_attempts}"
        previous = job.exception.split("; next attempt at")[0]
        return f"attempt {job.attempt + 1}{limit} started at {_when(_utc(self.clock()))} ({previous})"

    def _drop_object_missing(self, job: JobState) -> str | None:
        if not job.source_key:
            return f"job {job.job_id} has no drop object recorded"
        if self.source.head(job.source_key) is None:
            last = f" (last attempt: {job.exception})" if job.exception else ""
            return f"the drop object {self.source.uri(job.source_key)} is gone: the job cannot be retried{last}"
        return None

    def _clear(self, job: JobState) -> None:
        try:
            removed = clear_job(self.archive, ArchiveLayout(job.job_id, self.workflow.stagingPrefix))
        except StoreError as exc:  # the next attempt (or the next pass for a FAILED job) removes it
            log.warning("job %s: could not remove what its attempt left in the archive: %s", job.job_id, exc)
            return
        if removed:
            log.info("job %s: removed %d objects its attempt left in the archive", job.job_id, removed)
