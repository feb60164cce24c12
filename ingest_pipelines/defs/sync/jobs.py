"""The two jobs of a sync workflow: `<dname>__snapshot_job` and `<dname>__changes_job` (one asset each).

Runs carry `ingest/serial=<dname>`: the instance runs one of them per workflow at a time (dagster.yaml).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.sync.config import SyncWorkflow

SERIAL_TAG = "ingest/serial"
BATCH_TAG = "ingest/batch_id"


def executor_for(workflow: SyncWorkflow) -> dg.ExecutorDefinition:
    """In-process by default (a batch run is one step: no second process); `executor:` can pick
    `multiprocess` or `celery` (dagster-celery, with its config keys)."""
    spec: dict[str, Any] = dict(workflow.executor or {})
    kind = spec.pop("type", "in_process")
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        return dg.multiprocess_executor.configured(spec) if spec else dg.multiprocess_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(spec) if spec else celery_executor
    raise ValueError(f"workflow {workflow.name!r}: executor type {kind!r} is not one of in_process, multiprocess, celery")


def build_jobs(workflow: SyncWorkflow, snapshot_key: dg.AssetKey, changes_key: dg.AssetKey, snapshot_parts, changes_parts) -> list:
    dname = dagster_name(workflow.name)
    tags = {SERIAL_TAG: dname}
    executor = executor_for(workflow)
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
