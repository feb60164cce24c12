"""The jobs of a sync workflow: `<dname>__apply_job`, which the sensor launches to apply every pending batch,
and `<dname>__snapshot_job` / `<dname>__changes_job` (one partitioned asset each) for backfills.

Runs carry `ingest/serial=<dname>`: the instance runs one of them per workflow at a time (dagster.yaml).
"""

# no `from __future__ import annotations`: Dagster reads the op's context type from the annotation
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.executors import executor_for as configured_executor
from ingest_pipelines.defs.sync.assets import partition_metadata
from ingest_pipelines.defs.sync.checks import DESTINATION_CHECK, RECORDS_CHECK, described
from ingest_pipelines.defs.sync.partitions import hours_partitions_name
from ingest_pipelines.defs.sync.runtime import SyncRuntime, resource_keys
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.verify import CheckOutcome

SERIAL_TAG = "ingest/serial"
BATCH_TAG = "ingest/batch_id"
WORKFLOW_TAG = "ingest/workflow"


def executor_for(workflow: SyncWorkflow, config: IngestConfig) -> dg.ExecutorDefinition:
    """In-process by default (a run is one step: no second process); the workflow's `executor:`,
    else the top-level one, picks `multiprocess` or `celery` (ingest_pipelines.defs.executors)."""
    return configured_executor(workflow, config) or dg.in_process_executor


def apply_job_name(workflow: SyncWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__apply_job"


def build_apply_job(workflow: SyncWorkflow, config: IngestConfig, asset_keys: dict[str, dg.AssetKey]) -> dg.JobDefinition:
    dname = dagster_name(workflow.name)

    @dg.op(
        name=f"{dname}__apply",
        out={},
        required_resource_keys=resource_keys(workflow),
        description=f"Apply every pending change batch of sync workflow {workflow.name} in commit order.",
    )
    def apply_pending(context: dg.OpExecutionContext) -> Iterator[Any]:
        started = time.monotonic()
        runtime = SyncRuntime(workflow, config, context.resources)
        report = runtime.pending_applier(progress=context.log.info).run()
        destinations = runtime.destinations
        hours = sorted({partition for asset, partition in report.partitions if asset == "changes"})
        if hours:  # normally added by the sensor's commit already; a materialization must name a partition that exists
            context.instance.add_dynamic_partitions(hours_partitions_name(workflow), hours)
        merged: dict[str, tuple[CheckOutcome, CheckOutcome]] = {}
        for (asset, partition), part in sorted(report.partitions.items()):
            key = asset_keys[asset]
            copies, records = described(part, destinations)
            before = merged.get(asset)
            merged[asset] = (before[0].merge(copies), before[1].merge(records)) if before else (copies, records)
            if len(part.batches) > len(part.failed):
                yield dg.AssetMaterialization(
                    asset_key=key, partition=partition, metadata=partition_metadata(workflow, part, report, started)
                )
        for asset, outcomes in merged.items():
            for name, outcome in zip((DESTINATION_CHECK, RECORDS_CHECK), outcomes, strict=True):
                yield dg.AssetCheckEvaluation(
                    asset_key=asset_keys[asset],
                    check_name=name,
                    passed=outcome.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=outcome.description,
                    metadata=outcome.metadata(),
                )
        applied = sum(len(p.batches) for p in report.partitions.values()) - len(report.failed)
        context.log.info(
            f"{workflow.name}: {applied} batch(es) applied in {len(report.partitions)} partition(s)"
            + (f", {len(report.failed)} failed" if report.failed else "")
            + (f"; stopped: {report.stopped}" if report.stopped else "")
        )
        if report.failed:
            first = "\n".join(f"{batch}: {error}" for batch, error in list(report.failed.items())[:10])
            raise dg.Failure(
                description=f"{len(report.failed)} batch(es) failed (retried by the sensor after retryDelay):\n{first}",
                metadata={"failed_batches": len(report.failed), "applied_batches": applied},
                allow_retries=False,
            )

    @dg.job(
        name=apply_job_name(workflow),
        tags={SERIAL_TAG: dname, WORKFLOW_TAG: workflow.name},
        executor_def=executor_for(workflow, config),
        description=f"Apply every pending change batch of sync workflow {workflow.name} (the sync sensor launches it).",
    )
    def apply_job() -> None:
        apply_pending()

    return apply_job


def build_jobs(
    workflow: SyncWorkflow, config: IngestConfig, snapshot_key: dg.AssetKey, changes_key: dg.AssetKey, snapshot_parts, changes_parts
) -> list:
    dname = dagster_name(workflow.name)
    tags = {SERIAL_TAG: dname, WORKFLOW_TAG: workflow.name}
    executor = executor_for(workflow, config)
    # a backfill is idempotent, so a step that failed on a transient error (S3 503, a webhook down)
    # is simply applied again; what persists fails the run with the keys that failed
    retry = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
    return [
        build_apply_job(workflow, config, {"snapshot": snapshot_key, "changes": changes_key}),
        dg.define_asset_job(
            f"{dname}__snapshot_job",
            selection=dg.AssetSelection.assets(snapshot_key),
            partitions_def=snapshot_parts,
            tags=tags,
            executor_def=executor,
            op_retry_policy=retry,
            description=f"Backfill: re-list a snapshot shard of sync workflow {workflow.name} and catch every destination up.",
        ),
        dg.define_asset_job(
            f"{dname}__changes_job",
            selection=dg.AssetSelection.assets(changes_key),
            partitions_def=changes_parts,
            tags=tags,
            executor_def=executor,
            op_retry_policy=retry,
            description=f"Backfill: re-apply every batch of an hour of sync workflow {workflow.name} (idempotent).",
        ),
    ]
