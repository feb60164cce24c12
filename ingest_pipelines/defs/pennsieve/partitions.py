"""One dynamic partition per import: the name of a sub-folder (or sub-prefix) of the workflow's source.

The sensor adds partitions as folders appear; a user can add one in the UI and launch it with run config.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.pennsieve.config import PennsieveWorkflow


def import_partitions(workflow: PennsieveWorkflow) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{dagster_name(workflow.name)}__imports")


def manifest_key(workflow: PennsieveWorkflow, folder: str) -> str:
    """Where the import manifest of one partition lives in the state store."""
    return f"{workflow.name}/imports/{folder}.json"
