"""The per-date asset check of an inventory workflow: fails when an object failed or was dead-lettered,
or a data file could not be used, in any report of the date (each report's latest run counts)."""

from __future__ import annotations

from typing import Any

import dagster as dg

CHECK_NAME = "no_failures"


def index_check_spec(asset_key: dg.AssetKey, partitions_def: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        CHECK_NAME,
        asset=asset_key,
        partitions_def=partitions_def,
        description="Every candidate of the day's report was indexed or skipped by the tag rules; no data file was corrupt.",
    )


def index_check_result(asset_key: dg.AssetKey, date_outcome: dict[str, Any]) -> dg.AssetCheckResult:
    """`date_outcome`: ReportOutcomes.for_date, every report of the date that has run (not only this run's)."""
    failed, malformed_files = date_outcome["failed"], date_outcome["malformed_files"]
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=failed == 0 and malformed_files == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed": failed,
            "dead_lettered": dg.MetadataValue.json(date_outcome["dead_lettered"]),
            "failures": dg.MetadataValue.json(date_outcome["failures"]),
            "malformed_files": malformed_files,
            "reports": dg.MetadataValue.json(date_outcome["reports"]),
        },
    )


def no_report_check_result(asset_key: dg.AssetKey, date: str, where: str) -> dg.AssetCheckResult:
    """A date with no report: nothing failed, nothing was imported. WARN, so it shows without turning
    a backfill red (S3 Inventory skips days; a report delivered later is requested by the sensor)."""
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=CHECK_NAME,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "report": "none",
            "reason": f"no S3 Inventory report delivered on {date} under {where}",
            "failed": 0,
            "malformed_files": 0,
            "reports": dg.MetadataValue.json([]),
        },
    )
