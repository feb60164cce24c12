"""Dagster wiring of an `inventory` workflow: the report sensor, the daily `indexed` asset with its
check, and the job the sensor and backfills launch. Logic lives in `ingest_pipelines.inventory`."""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import ConfigError, IngestConfig, S3StoreConfig, WorkflowConfig
from ingest_pipelines.defs.inventory.assets import build_indexed_asset
from ingest_pipelines.defs.inventory.jobs import build_index_job
from ingest_pipelines.defs.inventory.sensors import build_inventory_sensor
from ingest_pipelines.inventory.config import InventoryWorkflow


def build(workflow: WorkflowConfig, config: IngestConfig) -> dg.Definitions:
    assert isinstance(workflow, InventoryWorkflow)
    source = config.source(workflow.source or "")
    if not isinstance(source, S3StoreConfig):
        raise ConfigError(
            f"{config.path}: workflow {workflow.name!r}: field 'source': {source.name!r} must be an s3 source (S3 Inventory bucket)"
        )
    asset = build_indexed_asset(workflow, config)
    job = build_index_job(workflow, asset)
    return dg.Definitions(assets=[asset], jobs=[job], sensors=[build_inventory_sensor(workflow, job)])
