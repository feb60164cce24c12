"""Dagster definitions of a `pennsieve` workflow: import asset + check (dynamic partitions), job, folders sensor.

Names: asset [<name>, "import"], job <name>__import_job, sensor <name>__folders_sensor, resource pennsieve_<name>.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import IngestConfig, WorkflowConfig
from ingest_pipelines.defs.pennsieve.assets import build_import_asset
from ingest_pipelines.defs.pennsieve.checks import build_import_check
from ingest_pipelines.defs.pennsieve.jobs import build_import_job
from ingest_pipelines.defs.pennsieve.partitions import import_partitions
from ingest_pipelines.defs.pennsieve.resources import api_resource, api_resource_key
from ingest_pipelines.defs.pennsieve.sensors import build_folders_sensor
from ingest_pipelines.pennsieve.config import PennsieveWorkflow


def build(workflow: WorkflowConfig, config: IngestConfig) -> dg.Definitions:
    assert isinstance(workflow, PennsieveWorkflow)
    partitions = import_partitions(workflow)
    job = build_import_job(workflow, partitions)
    return dg.Definitions(
        assets=[build_import_asset(workflow, config, partitions)],
        asset_checks=[build_import_check(workflow, config, partitions)],
        jobs=[job],
        sensors=[build_folders_sensor(workflow, partitions, job)],
        resources={api_resource_key(workflow): api_resource(workflow, config)},
    )
