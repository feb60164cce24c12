"""One run at a time per asset partition: a run that finds another run of the same partition executing stops.

Two runs of one bundle job (or one Pennsieve folder) would clear each other's staging or create two imports.
"""

from __future__ import annotations

import dagster as dg

#: statuses of a run whose steps may be executing right now
EXECUTING = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]


def other_executing_run(context: dg.AssetExecutionContext) -> dg.DagsterRun | None:
    """Another executing run of this asset partition: of the same job, or one selecting this asset (UI Materialize)."""
    key = context.asset_key
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": context.partition_key}, statuses=EXECUTING))
    for run in runs:
        if run.run_id == context.run_id:
            continue
        if run.job_name == context.dagster_run.job_name or (run.asset_selection and key in run.asset_selection):
            return run
    return None


def require_no_other_run(context: dg.AssetExecutionContext) -> None:
    """Fail this run (without retries, touching nothing) when another run of the partition is executing."""
    other = other_executing_run(context)
    if other is not None:
        raise dg.Failure(
            description=(
                f"partition {context.partition_key!r} is being processed by run {other.run_id} ({other.status.value}); "
                "wait for it, or terminate it in the UI if its process is gone, then launch again"
            ),
            metadata={"other_run_id": other.run_id},
            allow_retries=False,
        )
