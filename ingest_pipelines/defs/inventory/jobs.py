"""The job the inventory sensor and backfills launch: one run per report date.

Tagged `ingest/serial` so the queued coordinator runs one date at a time (day 2 diffs against day 1).
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs.executors import executor_for
from ingest_pipelines.inventory.config import InventoryWorkflow


def build_index_job(workflow: InventoryWorkflow, asset: dg.AssetsDefinition) -> dg.UnresolvedAssetJobDefinition:
    dname = dagster_name(workflow.name)
    return dg.define_asset_job(
        f"{dname}__index_job",
        selection=dg.AssetSelection.assets(asset),
        partitions_def=asset.partitions_def,
        tags={"ingest/serial": dname, "ingest/workflow": workflow.name},
        executor_def=executor_for(workflow),  # the workflow's `executor:`; else the code location's default
        description=f"Import the S3 Inventory report(s) of one day for workflow {workflow.name}.",
    )
