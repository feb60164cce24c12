"""Partitions of a sync workflow's assets: snapshot shards (static, by key prefix) and hours of change time.

A batch never spans two partitions, so re-running a partition re-applies exactly its batches.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.sync.config import SyncWorkflow


def snapshot_partitions(workflow: SyncWorkflow) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(workflow.shard_keys())


def changes_partitions(workflow: SyncWorkflow) -> dg.HourlyPartitionsDefinition:
    # end_offset=1: the current hour exists as a partition while changes are still arriving in it
    return dg.HourlyPartitionsDefinition(start_date=f"{workflow.changesStart}-00:00", end_offset=1)
