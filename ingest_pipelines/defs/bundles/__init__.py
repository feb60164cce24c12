"""Dagster definitions of one `bundle` workflow: the drop sensor (which also reconciles the workflow's jobs), the
per-bundle asset, its asset check and the ingest job. Names derive from `dagster_name(workflow.name)`."""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.bundles.assets import build_bundle_asset
from ingest_pipelines.defs.bundles.checks import build_archive_check
from ingest_pipelines.defs.bundles.jobs import build_ingest_job
from ingest_pipelines.defs.bundles.partitions import bundle_partitions
from ingest_pipelines.defs.bundles.sensors import build_drop_sensor


def build(workflow: BundleWorkflow, config: IngestConfig) -> dg.Definitions:
    partitions = bundle_partitions(workflow)
    asset = build_bundle_asset(workflow, config, partitions)
    check = build_archive_check(workflow, config, partitions)
    job = build_ingest_job(workflow, partitions, config)
    return dg.Definitions(
        assets=[asset],
        asset_checks=[check],
        jobs=[job],
        sensors=[build_drop_sensor(workflow, config, partitions, job)],
    )
