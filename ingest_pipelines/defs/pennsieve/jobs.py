"""The import job: materializes one partition (folder) of the import asset and its check; the sensor targets it."""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs.executors import executor_for
from ingest_pipelines.defs.pennsieve.assets import import_asset_key
from ingest_pipelines.pennsieve.config import PennsieveWorkflow


def build_import_job(workflow: PennsieveWorkflow, partitions: dg.DynamicPartitionsDefinition) -> dg.UnresolvedAssetJobDefinition:
    key = import_asset_key(workflow)
    return dg.define_asset_job(
        name=f"{dagster_name(workflow.name)}__import_job",
        selection=dg.AssetSelection.assets(key) | dg.AssetSelection.checks_for_assets(key),
        partitions_def=partitions,
        executor_def=executor_for(workflow),  # the workflow's `executor:`; else the code location's default
        description=f"Import one folder of {workflow.source!r} into Pennsieve (resumes the folder's import if it exists).",
    )
