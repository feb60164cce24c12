"""The partitioned assets of a sync workflow: `[<dname>, "snapshot"]` (shards) and `[<dname>, "changes"]` (hours).

The sensor's runs (`<dname>__apply_job`, jobs.py) apply every pending batch and materialize each partition
they touched. Materializing a partition here is the backfill: every committed batch of an hour again, or a
re-listing of a snapshot shard; `batch_id` in the run config applies one batch.
"""

# no `from __future__ import annotations`: Dagster reads the run config class from the annotation
import time
from typing import Any

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.sync.checks import DESTINATION_CHECK, RECORDS_CHECK, check_result, check_specs, described
from ingest_pipelines.defs.sync.runtime import SyncRuntime, resource_keys
from ingest_pipelines.sync.apply import SyncApplyError
from ingest_pipelines.sync.apply_pending import PartitionReport, RunReport, apply_batches
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.resync import resync_batches


class SyncBatchConfig(dg.Config):
    """Which batch to apply; empty: the whole partition (every batch of the hour / a re-listed shard)."""

    batch_id: str = ""


def partition_metadata(workflow: SyncWorkflow, part: PartitionReport, run: RunReport, started: float) -> dict[str, Any]:
    """What one run did in one partition: counts, batches, positions, lag. Never one event per object."""
    total = part.total
    oldest = run.oldest_pending_change if run.oldest_pending_change is not None else part.oldest_change
    meta: dict[str, Any] = {
        "objects": total.objects,
        "bytes": total.bytes,
        "snapshots": total.snapshots,
        "creates": total.creates,
        "updates": total.updates,
        "deletes": total.deletes,
        "copied": total.copied,
        "already_present": total.already_present,
        "superseded": total.superseded,
        "source_missing": total.source_missing,
        "deleted_in_destinations": total.deleted_in_destinations,
        "record_files": len(total.records_files),
        "cleaned_up": total.cleaned_up,
        "batches": len(part.batches),
        "failed_batches": len(part.failed),
        "position_from": part.batches[0].position_from if part.batches else "",
        "position_to": part.batches[-1].position_to if part.batches else "",
        "lag_seconds": round(max(0.0, time.time() - oldest), 3) if oldest is not None else 0.0,
        "duration_seconds": round(time.monotonic() - started, 3),
        "destinations": ", ".join(workflow.destinations),
    }
    if len(part.batches) == 1:
        meta["batch_id"] = part.batches[0].id
    else:
        meta["batch_ids"] = "\n".join(b.id for b in part.batches[:200])
    if part.failed:
        meta["first_failures"] = "\n".join(f"{batch}: {error}" for batch, error in list(part.failed.items())[:10])
    if total.webhook_status is not None:
        meta["webhook_status"] = total.webhook_status
    return meta


def _materialize(context: dg.AssetExecutionContext, runtime: SyncRuntime, batches: Any, resync: bool) -> dg.MaterializeResult:
    started = time.monotonic()
    workflow = runtime.workflow
    applier = runtime.pending_applier(progress=context.log.info)
    report = apply_batches(applier, batches, resync=resync)
    asset = context.asset_key.path[-1]
    part = report.partitions.get((asset, context.partition_key)) or PartitionReport(asset, context.partition_key)
    if report.failed:
        raise SyncApplyError("; ".join(report.failed.values()))
    context.log.info(
        f"{workflow.name}: {len(part.batches)} batch(es), {part.total.objects} object(s), {part.total.copied} copied, "
        f"{part.total.already_present} already present, {part.total.deletes} delete(s)"
    )
    key = context.asset_key
    copies, records = described(part, runtime.destinations)
    return dg.MaterializeResult(
        metadata=partition_metadata(workflow, part, report, started),
        check_results=[check_result(key, DESTINATION_CHECK, copies), check_result(key, RECORDS_CHECK, records)],
    )


def build_assets(
    workflow: SyncWorkflow, ingest_config: IngestConfig, snapshot_parts: dg.PartitionsDefinition, changes_parts: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    dname = dagster_name(workflow.name)
    snapshot_key = dg.AssetKey([dname, "snapshot"])
    changes_key = dg.AssetKey([dname, "changes"])
    keys = resource_keys(workflow)
    kinds = {"s3"}

    @dg.asset(
        key=snapshot_key,
        partitions_def=snapshot_parts,
        required_resource_keys=keys,
        check_specs=check_specs(snapshot_key),
        group_name=dname,
        kinds=kinds,
        description=f"Sync {workflow.name}: the snapshot of source {workflow.source!r}, one partition per shard prefix.",
    )
    def snapshot(context: dg.AssetExecutionContext, config: SyncBatchConfig) -> dg.MaterializeResult:
        runtime = SyncRuntime(workflow, ingest_config, context.resources)
        shard = context.partition_key
        if config.batch_id:
            return _materialize(context, runtime, [runtime.batch_store.read("snapshot", shard, config.batch_id)], resync=False)
        context.log.info(f"{workflow.name}: re-listing shard {shard!r} and bringing every destination up to date")
        return _materialize(context, runtime, resync_batches(workflow, shard, runtime.source, runtime.ledger, time.time()), resync=True)

    @dg.asset(
        key=changes_key,
        partitions_def=changes_parts,
        required_resource_keys=keys,
        check_specs=check_specs(changes_key),
        group_name=dname,
        kinds=kinds,
        description=f"Sync {workflow.name}: changes of source {workflow.source!r} by hour of change time.",
    )
    def changes(context: dg.AssetExecutionContext, config: SyncBatchConfig) -> dg.MaterializeResult:
        runtime = SyncRuntime(workflow, ingest_config, context.resources)
        hour = context.partition_key
        if config.batch_id:
            batches = [runtime.batch_store.read("changes", hour, config.batch_id)]
        else:
            batches = runtime.batch_store.partition_batches("changes", hour)
            context.log.info(f"{workflow.name}: re-applying {len(batches)} batch(es) of hour {hour}")
        return _materialize(context, runtime, batches, resync=False)

    return [snapshot, changes]
