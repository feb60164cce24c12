"""The ingest job of a bundle workflow: the bundle asset (and its check) for one partition per run."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs.executors import executor_for


def ingest_job_name(workflow: BundleWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__ingest_job"


def bundle_asset_key(workflow: BundleWorkflow) -> dg.AssetKey:
    return dg.AssetKey([dagster_name(workflow.name), "bundle"])


def build_ingest_job(workflow: BundleWorkflow, partitions: dg.PartitionsDefinition) -> Any:
    return dg.define_asset_job(
        ingest_job_name(workflow),
        selection=dg.AssetSelection.assets(bundle_asset_key(workflow)),
        partitions_def=partitions,
        tags={"ingest/workflow": workflow.name},
        executor_def=executor_for(workflow),  # the workflow's `executor:`; else the code location's default
        description=f"Validate and ingest one bundle of workflow {workflow.name!r} (one partition = one job id).",
    )
