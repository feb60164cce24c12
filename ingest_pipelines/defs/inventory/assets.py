"""The `[<workflow>, "indexed"]` asset: one partition per inventory date; a run imports that day's
report(s) through the domain importer inside the `gateway` concurrency pool and reports counts."""

import dagster as dg
from dagster import AssetExecutionContext

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.inventory.checks import index_check_result, index_check_spec, no_report_check_result
from ingest_pipelines.defs.inventory.partitions import inventory_partitions
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, config_at, store_resource_key
from ingest_pipelines.inventory.config import InventoryWorkflow
from ingest_pipelines.inventory.gateway import GatewayClient
from ingest_pipelines.inventory.history import ImportHistory, default_history_url
from ingest_pipelines.inventory.importer import OBJECT_STATUSES, REPORT_COUNTS, InventoryImport, ReportResult
from ingest_pipelines.inventory.manifest import ManifestError, ReportRef, parse_report_key, reports_for_date
from ingest_pipelines.storage.s3 import S3Store

#: run tag the sensor sets: the manifest key of the report that triggered the run.
REPORT_TAG = "ingest/inventory-report"
GATEWAY_POOL = "gateway"


def _reports(context: AssetExecutionContext, store: S3Store, date: str) -> list[ReportRef]:
    """The sensor's report, or (backfill / UI launch) every report delivered on the date."""
    tagged = context.run.tags.get(REPORT_TAG)
    if tagged:
        ref = parse_report_key(tagged, store.prefix)
        if ref is None or ref.date != date:
            raise ManifestError(f"run tag {REPORT_TAG}={tagged!r} is not a report of {date} under {store.uri()}")
        return [ref]
    # a day without a report is normal for S3 Inventory (weekly configs, a delivery skipped): [] is no error
    return reports_for_date(store.client, store.bucket, store.prefix, date)


def report_metadata(results: list[ReportResult]) -> dict[str, dg.MetadataValue | int | str]:
    totals = dict.fromkeys(REPORT_COUNTS, 0)
    for result in results:
        for name, value in result.counts().items():
            totals[name] = totals.get(name, 0) + value
    return {
        **totals,
        "reports": dg.MetadataValue.json([result.report for result in results]),
        "previous_reports": dg.MetadataValue.json([result.previous_report for result in results]),
        "dead_lettered": dg.MetadataValue.json([key for result in results for key in result.dead_lettered]),
        "failures": dg.MetadataValue.json({k: v for result in results for k, v in result.failures.items()}),
        "malformed_examples": dg.MetadataValue.json([text for result in results for text in result.malformed_examples]),
        "batch_manifests": dg.MetadataValue.json([result.batch_manifest for result in results]),
        "results_reports": dg.MetadataValue.json([result.results_report for result in results]),
    }


def build_indexed_asset(workflow: InventoryWorkflow, config: IngestConfig) -> dg.AssetsDefinition:
    dname = dagster_name(workflow.name)
    source_key = store_resource_key("source", workflow.source or "")
    asset_key = dg.AssetKey([dname, "indexed"])
    partitions_def = inventory_partitions(workflow)
    config_path = config.path

    @dg.asset(
        key=asset_key,
        partitions_def=partitions_def,
        pool=GATEWAY_POOL,
        required_resource_keys={source_key, STATE_RESOURCE_KEY},
        check_specs=[index_check_spec(asset_key, partitions_def)],
        group_name=dname,
        kinds={"s3"},
        description=(
            f"Objects of the day's S3 Inventory report(s) under {workflow.source!r} sent to the indexing gateway "
            f"{workflow.gateway.url}; counts: {', '.join(OBJECT_STATUSES)}."
        ),
    )
    def indexed(context: AssetExecutionContext) -> dg.MaterializeResult:
        store = getattr(context.resources, source_key).get_store()
        state = getattr(context.resources, STATE_RESOURCE_KEY).get_state()
        history_url = workflow.history or default_history_url(config_at(config_path) if config_path else config, workflow.name)
        history = ImportHistory(history_url, workflow.name)
        gateway = GatewayClient(workflow.gateway)
        try:
            importer = InventoryImport(workflow, store, state, history, gateway, log=context.log)
            refs = _reports(context, store, context.partition_key)
            results = [importer.import_report(ref) for ref in refs]
            date_outcome = importer.outcomes.for_date(context.partition_key)
        finally:
            gateway.close()
            history.close()
        if not refs:
            where = store.uri()
            context.log.warning(f"no S3 Inventory report delivered on {context.partition_key} under {where}; nothing to import")
            return dg.MaterializeResult(
                metadata={**report_metadata([]), "report": "none"},
                check_results=[no_report_check_result(asset_key, context.partition_key, where)],
            )
        for result in results:
            if result.dead_lettered:
                context.log.error(f"{result.report}: dead-lettered after every gateway attempt: {', '.join(result.dead_lettered[:20])}")
        return dg.MaterializeResult(metadata=report_metadata(results), check_results=[index_check_result(asset_key, date_outcome)])

    return indexed
