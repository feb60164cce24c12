"""Partitions of a sync workflow's assets: snapshot shards (static, by key prefix) and the hours that had
changes (dynamic: an hour `YYYY-MM-DD-HH:00` is added when the sensor commits its first batch).

A batch never spans two partitions, so re-running a partition re-applies exactly its batches. The hours are
dynamic rather than a time window from a start date: a new workflow shows the hours since it started (the
hours with changes) instead of every hour since 2024, and a "missing" hour is one whose batches no run has
applied yet, so a backfill of the missing hours does exactly what is owed.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.sync.config import SyncWorkflow


def snapshot_partitions(workflow: SyncWorkflow) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(workflow.shard_keys())


def hours_partitions_name(workflow: SyncWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__hours"


def changes_partitions(workflow: SyncWorkflow) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=hours_partitions_name(workflow))
