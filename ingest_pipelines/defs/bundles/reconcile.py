"""Bundle job reconciliation on a Dagster instance: the runs of a job as `bundles.attempts` sees them, the tags
of an attempt's run, and the front door's background loop (the drop sensor reconciles on each of its ticks).

Who reconciles: the drop sensor (every job of its workflow, whatever its origin) and `ingest-pipelines serve`,
so that uploads through serve converge with the drop sensor stopped. Both may run at once: each attempt is
claimed by compare-and-set in the job store, so one attempt gets one run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg
from dagster._core.events import DagsterEventType

from ingest_pipelines.bundles.attempts import (
    CANCELED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    UNSUBMITTED,
    BundleReconciler,
    ReconcileReport,
    RunView,
)
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import TASK_OPEN_TAR
from ingest_pipelines.bundles.jobs import JobState, JobStore
from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.runs import NO_DAGSTER_RETRIES, failure_message
from ingest_pipelines.storage import ObjectStore, open_store

log = logging.getLogger(__name__)

WORKFLOW_TAG = "ingest/workflow"
JOB_TAG = "ingest/bundle_job"
ATTEMPT_TAG = "ingest/attempt"
DROP_KEY_TAG = "ingest/drop_key"

#: Dagster's message when a run is failed by another process without a reason of its own
_OUTSIDE_FAILURE = "This run has been marked as failed from outside the execution context"
_DEATH_WORDS = ("exited", "gone", "killed", "terminated", "signal", "detected run worker", "error")

_STATUS = {
    dg.DagsterRunStatus.QUEUED: QUEUED,
    dg.DagsterRunStatus.NOT_STARTED: UNSUBMITTED,
    dg.DagsterRunStatus.STARTING: RUNNING,
    dg.DagsterRunStatus.STARTED: RUNNING,
    dg.DagsterRunStatus.CANCELING: RUNNING,
    dg.DagsterRunStatus.SUCCESS: SUCCEEDED,
    dg.DagsterRunStatus.FAILURE: FAILED,
    dg.DagsterRunStatus.CANCELED: CANCELED,
}


def attempt_tags(job: JobState) -> dict[str, str]:
    """Tags of the run of a job's current attempt: Dagster's own run retries off, the product counts attempts."""
    return {JOB_TAG: str(job.job_id), ATTEMPT_TAG: str(job.attempt), DROP_KEY_TAG: job.source_key or "", **NO_DAGSTER_RETRIES}


def attempt_run_key(job: JobState) -> str:
    """The drop sensor's run key of an attempt: one run per (job, attempt)."""
    return f"job-{job.job_id}-attempt-{job.attempt}"


def run_attempt(run: dg.DagsterRun) -> int | None:
    value = run.tags.get(ATTEMPT_TAG, "")
    return int(value) if value.isdigit() else None


def _timestamp(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _location(run: dg.DagsterRun) -> str | None:
    origin = run.remote_job_origin
    return origin.location_name if origin is not None else None


class InstanceRuns:
    """`RunsView` over a Dagster instance, for one bundle workflow."""

    def __init__(self, instance: dg.DagsterInstance, workflow: BundleWorkflow):
        self.instance = instance
        self.workflow = workflow

    def runs(self, job: JobState) -> list[RunView]:
        records = self.instance.get_run_records(
            filters=dg.RunsFilter(tags={WORKFLOW_TAG: self.workflow.name, JOB_TAG: str(job.job_id)}), limit=50
        )
        return [
            RunView(
                run_id=record.dagster_run.run_id,
                status=_STATUS.get(record.dagster_run.status, RUNNING),
                created=_timestamp(record.create_timestamp),
                attempt=run_attempt(record.dagster_run),
                location=_location(record.dagster_run),
            )
            for record in records
        ]

    def failure_message(self, run: RunView) -> str:
        """The step's error when a step failed (the run's own message only says "Steps failed"), else the run's."""
        records = self.instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_FAILURE, ascending=False, limit=1).records
        for record in records:
            event = record.event_log_entry.dagster_event
            error = event.step_failure_data.error if event is not None and event.step_failure_data else None
            if error is not None:
                cause = error.cause.message.strip() if error.cause is not None else ""
                return error.message.strip() + (f" ({cause[:300]})" if cause and cause not in error.message else "")
        message = failure_message(self.instance, run.run_id)
        if message.startswith(_OUTSIDE_FAILURE):
            # another process failed the run (the code server, of a worker that died; the daemon, of a run it could
            # not launch): why is in its engine events just before. First sentences: Dagster's advice after them
            # (out of memory?) is a guess
            records = self.instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=10
            ).records
            found = [
                text.strip().split(". ")[0].rstrip(".")
                for record in records
                if any(word in (text := record.event_log_entry.message or "").lower() for word in _DEATH_WORDS)
            ]
            if found:
                return found[0] + (f" ({found[1]})" if len(found) > 1 else "")
        return message

    def started_since(self, timestamp: float, location: str | None) -> bool:
        since = datetime.fromtimestamp(timestamp, UTC)
        for record in self.instance.get_run_records(filters=dg.RunsFilter(updated_after=since), limit=200):
            if record.start_time is not None and record.start_time > timestamp:
                if location is None or _location(record.dagster_run) == location:
                    return True
        return False

    def cancel(self, run: RunView, reason: str) -> None:
        dagster_run = self.instance.get_run_by_id(run.run_id)
        if dagster_run is None:
            return
        self.instance.report_engine_event(reason, dagster_run)
        if dagster_run.status == dg.DagsterRunStatus.NOT_STARTED:
            self.instance.report_run_failed(dagster_run, reason)
        elif dagster_run.status == dg.DagsterRunStatus.QUEUED:
            self.instance.run_coordinator.cancel_run(run.run_id)


def reconciler_for(
    instance: dg.DagsterInstance, workflow: BundleWorkflow, config: IngestConfig, source: ObjectStore, archive: ObjectStore
) -> BundleReconciler:
    return BundleReconciler(workflow, JobStore(workflow.jobs_url(config)), source, archive, InstanceRuns(instance, workflow))


#: submit(workflow, job) -> run id (the front door's RunSubmitter); raises LaunchFailed
Submit = Callable[[BundleWorkflow, JobState], str]


class FrontDoorReconciler:
    """The front door's side of reconciliation: the first attempt of an upload at once, and every pass
    (each `interval` of the workflow, at most 30 s) all unfinished jobs of its workflows, like the drop sensor."""

    def __init__(self, config: IngestConfig, instance: dg.DagsterInstance, submit: Submit):
        self.config = config
        self.instance = instance
        self.submit = submit
        self.workflows = [w for w in config.workflows if isinstance(w, BundleWorkflow)]
        self._reconcilers: dict[str, BundleReconciler] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = max(1.0, min([30.0, *(float(w.interval) for w in self.workflows)]))

    def reconciler(self, workflow: BundleWorkflow) -> BundleReconciler:
        if workflow.name not in self._reconcilers:
            # stores from the loaded config: secrets are read from the environment in this process, as resources do
            source = open_store(self.config.source(workflow.source or ""))
            archive = open_store(self.config.destination(workflow.destinations[0]))
            self._reconcilers[workflow.name] = reconciler_for(self.instance, workflow, self.config, source, archive)
        return self._reconcilers[workflow.name]

    def launch_new(self, workflow: BundleWorkflow, job: JobState) -> JobState:
        """The first attempt of a job the front door just stored (unless a reconciler already claimed it)."""
        reconciler = self.reconciler(workflow)
        claimed = reconciler.jobs.claim(job.job_id, 0, task=TASK_OPEN_TAR)
        if claimed is None:
            return reconciler.jobs.get(job.job_id)
        return reconciler.launch_claimed(claimed, lambda claimed_job: self.submit(workflow, claimed_job))

    def run_once(self) -> dict[str, ReconcileReport]:
        reports = {}
        for workflow in self.workflows:
            reconciler = self.reconciler(workflow)
            report = reconciler.reconcile(lambda job, workflow=workflow: self.submit(workflow, job), deadline=time.monotonic() + 60)
            if report.launched or report.failed:
                log.info("workflow %s: %s", workflow.name, report.summary())
            reports[workflow.name] = report
        return reports

    def start(self) -> FrontDoorReconciler:
        self._thread = threading.Thread(target=self._loop, name="bundle-reconcile", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a failing pass (database or instance unreachable) is retried on the next one
                log.exception("bundle reconciliation pass failed")
            self._stop.wait(self.interval)
