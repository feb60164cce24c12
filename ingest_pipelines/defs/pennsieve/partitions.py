"""One dynamic partition per import: the name of a sub-folder (or sub-prefix) of the workflow's source.

The sensor adds partitions as folders appear; a user can add one in the UI and launch it with run config.
"""

from __future__ import annotations

import hashlib

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.pennsieve.config import PennsieveWorkflow


def import_partitions(workflow: PennsieveWorkflow) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{dagster_name(workflow.name)}__imports")


#: longer folder names (in UTF-8 bytes) are shortened: a state folder's file names stop at 255 bytes
MAX_NAME_BYTES = 200


def manifest_key(workflow: PennsieveWorkflow, folder: str) -> str:
    """Where the import manifest of one partition lives in the state store."""
    encoded = folder.encode()
    if len(encoded) > MAX_NAME_BYTES:
        # a readable start plus a digest of the whole name keeps every long folder's key distinct
        start = encoded[:100].decode(errors="ignore")
        folder = f"{start}-{hashlib.sha256(encoded).hexdigest()[:16]}"
    return f"{workflow.name}/imports/{folder}.json"
