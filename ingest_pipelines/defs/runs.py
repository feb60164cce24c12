"""The instance's runs as the product's reconciliation reads them: which runs of a workflow (by tag) are
queued or in progress, the newest run of a request, and why a run failed.

Reconciliation never trusts a run to finish: what is committed and not applied is requested again.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
from dagster._core.events import DagsterEventType

#: a run in one of these may still do (or be about to do) the work: do not request another one.
NOT_FINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]
#: Dagster's own run retries are off for runs the product reconciles (one mechanism, attempts counted once).
NO_DAGSTER_RETRIES = {"dagster/max_retries": "0"}


def unfinished_runs(instance: dg.DagsterInstance, tags: Mapping[str, str], limit: int = 20) -> list[dg.DagsterRun]:
    """Runs with all of `tags` that are queued, starting, started or canceling, newest first."""
    return list(instance.get_runs(filters=dg.RunsFilter(tags=dict(tags), statuses=NOT_FINISHED), limit=limit))


def latest_run(instance: dg.DagsterInstance, tags: Mapping[str, str]) -> dg.DagsterRun | None:
    """The newest run with all of `tags`, whatever its status."""
    runs = instance.get_runs(filters=dg.RunsFilter(tags=dict(tags)), limit=1)
    return runs[0] if runs else None


def run_record(instance: dg.DagsterInstance, run_id: str) -> dg.RunRecord | None:
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=[run_id]), limit=1)
    return records[0] if records else None


def failure_message(instance: dg.DagsterInstance, run_id: str) -> str:
    """Why a run ended without success: its run-failure or cancel message, else the last step failure."""
    wanted = {DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_CANCELED, DagsterEventType.STEP_FAILURE}
    records = instance.get_records_for_run(run_id, of_type=wanted, ascending=False, limit=5).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.STEP_FAILURE and event.step_failure_data and event.step_failure_data.error:
            return event.step_failure_data.error.message.strip()
        message = record.event_log_entry.message or (event.message or "")
        if message:
            return message.strip()
    return "the run ended without a failure event"
