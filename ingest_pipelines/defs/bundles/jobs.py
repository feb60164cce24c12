"""The ingest job of a bundle workflow: the bundle asset (and its check) for one partition per run."""

from __future__ import annotations

from typing import Any

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.executors import executor_for


def ingest_job_name(workflow: BundleWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__ingest_job"


def bundle_asset_key(workflow: BundleWorkflow) -> dg.AssetKey:
    return dg.AssetKey([dagster_name(workflow.name), "bundle"])


def build_ingest_job(workflow: BundleWorkflow, partitions: dg.PartitionsDefinition, config: IngestConfig | None = None) -> Any:
    # the workflow's (or the top-level) `executor:`; else in-process: a run is one streaming step and its check,
    # and a step subprocess per step costs seconds of latency per bundle and nothing else (one process to kill, too)
    executor = executor_for(workflow, config)
    return dg.define_asset_job(
        ingest_job_name(workflow),
        selection=dg.AssetSelection.assets(bundle_asset_key(workflow)),
        partitions_def=partitions,
        tags={"ingest/workflow": workflow.name},
        executor_def=executor if executor is not None else dg.in_process_executor,
        description=f"Validate and ingest one bundle of workflow {workflow.name!r} (one partition = one job id).",
    )
