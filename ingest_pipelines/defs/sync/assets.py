"""The partitioned assets of a sync workflow: `[<dname>, "snapshot"]` (shards) and `[<dname>, "changes"]` (hours).

A run applies one batch (run config `batch_id`, from the sensor) or, without one, the whole partition
(a backfill); it ends in one materialization with counts and the checks' results.
"""

import time
from collections.abc import Iterable
from typing import Any

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.defs.sync.checks import DESTINATION_CHECK, RECORDS_CHECK, check_result, check_specs
from ingest_pipelines.sync.apply import ApplyResult, BatchApplier, Destination
from ingest_pipelines.sync.batches import BatchStore, ChangeBatch
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger, default_ledger_url
from ingest_pipelines.sync.resync import resync_batches
from ingest_pipelines.sync.verify import CheckOutcome, destinations_match, records_unique


class SyncBatchConfig(dg.Config):
    """Which batch to apply; empty: the whole partition (every batch of the hour / a re-listed shard)."""

    batch_id: str = ""


def ledger_url(workflow: SyncWorkflow, config: IngestConfig) -> str:
    return workflow.ledger or default_ledger_url(config)


def resource_keys(workflow: SyncWorkflow) -> set[str]:
    keys = {store_resource_key("source", workflow.source or ""), STATE_RESOURCE_KEY}
    keys.update(store_resource_key("destination", name) for name in workflow.destinations)
    return keys


class SyncRuntime:
    """The stores, ledger and applier of one workflow inside a run or a sensor tick."""

    def __init__(self, workflow: SyncWorkflow, config: IngestConfig, resources: Any):
        pool = workflow.threads + 8
        self.workflow = workflow
        self.source = getattr(resources, store_resource_key("source", workflow.source or "")).get_store(max_pool_connections=pool)
        self.state = getattr(resources, STATE_RESOURCE_KEY).get_state()
        self.ledger = SyncLedger(ledger_url(workflow, config))
        self.batch_store = BatchStore(self.state, workflow.name)
        self._resources = resources
        self._destinations: list[Destination] | None = None

    @property
    def destinations(self) -> list[Destination]:
        if self._destinations is None:
            pool = self.workflow.threads + 8
            out = []
            for name in self.workflow.destinations:
                resource = getattr(self._resources, store_resource_key("destination", name))
                out.append(Destination(name, resource.store_config(), resource.get_store(max_pool_connections=pool)))
            self._destinations = out
        return self._destinations

    def applier(self) -> BatchApplier:
        return BatchApplier(self.workflow, self.source, self.destinations, self.ledger)


def _metadata(workflow: SyncWorkflow, batches: list[ChangeBatch], total: ApplyResult, started: float, lag: float) -> dict[str, Any]:
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
        "batches": len(batches),
        "position_from": batches[0].position_from if batches else "",
        "position_to": batches[-1].position_to if batches else "",
        "lag_seconds": round(lag, 3),
        "duration_seconds": round(time.monotonic() - started, 3),
        "destinations": ", ".join(workflow.destinations),
    }
    if len(batches) == 1:
        meta["batch_id"] = batches[0].id
    else:
        meta["batch_ids"] = "\n".join(b.id for b in batches[:200])
    if total.webhook_status is not None:
        meta["webhook_status"] = total.webhook_status
    return meta


def _run_batches(
    context: dg.AssetExecutionContext,
    runtime: SyncRuntime,
    batches: Iterable[ChangeBatch],
    resync: bool,
) -> dg.MaterializeResult:
    started = time.monotonic()
    workflow = runtime.workflow
    key = context.asset_key
    applier = runtime.applier()
    oldest = runtime.ledger.oldest_unapplied(workflow.name)
    total = ApplyResult(batch_id="*")
    done: list[ChangeBatch] = []
    dest_check = CheckOutcome(True, "")
    records_check = CheckOutcome(True, "")
    for batch in batches:
        oldest = batch.oldest_change if oldest is None else min(oldest, batch.oldest_change)
        applied = applier.apply(batch, resync=resync)
        total.add_counts(applied)
        dest_check = dest_check.merge(
            destinations_match(workflow.name, batch, runtime.source, applier.destinations, runtime.ledger, applied.observed)
        )
        records_check = records_check.merge(records_unique(batch, applier.destinations))
        done.append(batch)
    dest_check.description = (
        f"{dest_check.checked} object(s) checked in {len([d for d in applier.destinations if not d.records])} destination(s)"
    )
    records_check.description = (
        f"{records_check.checked} record(s) read in {len([d for d in applier.destinations if d.records])} records destination(s)"
    )
    lag = max(0.0, time.time() - oldest) if oldest is not None else 0.0
    context.log.info(
        f"{workflow.name}: {len(done)} batch(es), {total.objects} object(s), {total.copied} copied, "
        f"{total.already_present} already present, {total.deletes} delete(s)"
    )
    return dg.MaterializeResult(
        metadata=_metadata(workflow, done, total, started, lag),
        check_results=[check_result(key, DESTINATION_CHECK, dest_check), check_result(key, RECORDS_CHECK, records_check)],
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
            return _run_batches(context, runtime, [runtime.batch_store.read("snapshot", shard, config.batch_id)], resync=False)
        context.log.info(f"{workflow.name}: re-listing shard {shard!r} and bringing every destination up to date")
        return _run_batches(context, runtime, resync_batches(workflow, shard, runtime.source, runtime.ledger, time.time()), resync=True)

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
            batches = runtime.batch_store.partition_batches(runtime.ledger, "changes", hour)
            context.log.info(f"{workflow.name}: re-applying {len(batches)} batch(es) of hour {hour}")
        return _run_batches(context, runtime, batches, resync=False)

    return [snapshot, changes]
