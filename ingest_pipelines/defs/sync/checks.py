"""Asset checks of the sync assets: every destination matches the batch; records are not duplicated.

The checks are evaluated inside the materializing run (one result per batch run); the logic is in sync/verify.py.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.sync.verify import CheckOutcome

DESTINATION_CHECK = "destination_matches_batch"
RECORDS_CHECK = "no_duplicate_records"


def check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            DESTINATION_CHECK,
            asset=asset_key,
            description="Every object of the batch is in every object destination with the right size and ETag; deletes are gone.",
        ),
        dg.AssetCheckSpec(
            RECORDS_CHECK,
            asset=asset_key,
            description="Each change of the batch is exactly one record in every records destination.",
        ),
    ]


def check_result(asset_key: dg.AssetKey, name: str, outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=outcome.description,
        metadata=outcome.metadata(),
    )
