"""The two jobs of a sync workflow: `<dname>__snapshot_job` and `<dname>__changes_job` (one asset each).

Runs carry `ingest/serial=<dname>`: the instance runs one of them per workflow at a time (dagster.yaml).
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.executors import executor_for as configured_executor
from ingest_pipelines.sync.config import SyncWorkflow

SERIAL_TAG = "ingest/serial"
BATCH_TAG = "ingest/batch_id"


def executor_for(workflow: SyncWorkflow, config: IngestConfig) -> dg.ExecutorDefinition:
    """In-process by default (a batch run is one step: no second process); the workflow's `executor:`,
    else the top-level one, picks `multiprocess` or `celery` (ingest_pipelines.defs.executors)."""
    return configured_executor(workflow, config) or dg.in_process_executor


def build_jobs(
    workflow: SyncWorkflow, config: IngestConfig, snapshot_key: dg.AssetKey, changes_key: dg.AssetKey, snapshot_parts, changes_parts
) -> list:
    dname = dagster_name(workflow.name)
    tags = {SERIAL_TAG: dname}
    executor = executor_for(workflow, config)
    # a batch is idempotent, so a step that failed on a transient error (S3 503, a webhook down)
    # is simply applied again; what persists fails the run with the keys that failed
    retry = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)
    return [
        dg.define_asset_job(
            f"{dname}__snapshot_job",
            selection=dg.AssetSelection.assets(snapshot_key),
            partitions_def=snapshot_parts,
            tags=tags,
            executor_def=executor,
            op_retry_policy=retry,
            description=f"Apply snapshot batches of sync workflow {workflow.name} (no batch_id: re-list the shard and catch up).",
        ),
        dg.define_asset_job(
            f"{dname}__changes_job",
            selection=dg.AssetSelection.assets(changes_key),
            partitions_def=changes_parts,
            tags=tags,
            executor_def=executor,
            op_retry_policy=retry,
            description=f"Apply change batches of sync workflow {workflow.name} (no batch_id: every batch of the hour).",
        ),
    ]
