"""The Dagster side of `sync` workflows: partitioned assets, their checks, the jobs and the sync sensor.

Names: assets `[<dname>, "snapshot"|"changes"]`, jobs `<dname>__apply_job` (the sensor's runs) and
`<dname>__snapshot_job` / `<dname>__changes_job` (backfills), sensor `<dname>__sync_sensor`.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import IngestConfig, WorkflowConfig, dagster_name
from ingest_pipelines.defs.sync.assets import build_assets
from ingest_pipelines.defs.sync.checks import build_convergence_checks
from ingest_pipelines.defs.sync.jobs import build_jobs
from ingest_pipelines.defs.sync.partitions import changes_partitions, snapshot_partitions
from ingest_pipelines.defs.sync.sensors import build_sensor
from ingest_pipelines.sync.config import SyncWorkflow


def build(workflow: WorkflowConfig, config: IngestConfig) -> dg.Definitions:
    assert isinstance(workflow, SyncWorkflow), f"workflow {workflow.name!r} is not a sync workflow"
    dname = dagster_name(workflow.name)
    snapshot_parts = snapshot_partitions(workflow)
    changes_parts = changes_partitions(workflow)
    asset_keys = {"snapshot": dg.AssetKey([dname, "snapshot"]), "changes": dg.AssetKey([dname, "changes"])}
    assets = build_assets(workflow, config, snapshot_parts, changes_parts)
    jobs = build_jobs(workflow, config, asset_keys["snapshot"], asset_keys["changes"], snapshot_parts, changes_parts)
    return dg.Definitions(
        assets=assets,
        asset_checks=build_convergence_checks(workflow, config, asset_keys),
        jobs=jobs,
        sensors=[build_sensor(workflow, config, jobs, asset_keys, changes_parts)],
    )
