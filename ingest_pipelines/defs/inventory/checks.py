"""The per-date asset check of an inventory workflow: fails when an object failed or was dead-lettered,
or a data file of the report could not be used."""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.inventory.importer import ReportResult

CHECK_NAME = "no_failures"


def index_check_spec(asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=asset_key,
        partitions_def=partitions_def,
        description="Every candidate of the day's report was indexed or skipped by the tag rules; no data file was corrupt.",
    )


def index_check_result(asset_key: dg.AssetKey, results: list[ReportResult]) -> dg.AssetCheckResult:
    failed = sum(result.failed for result in results)
    dead_lettered = [key for result in results for key in result.dead_lettered]
    malformed_files = sum(result.malformed_files for result in results)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=failed == 0 and malformed_files == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed": failed,
            "dead_lettered": dg.MetadataValue.json(dead_lettered),
            "failures": dg.MetadataValue.json({k: v for result in results for k, v in result.failures.items()}),
            "malformed_files": malformed_files,
        },
    )
