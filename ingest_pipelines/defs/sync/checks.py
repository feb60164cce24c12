"""Asset checks of the sync assets: every destination matches the batches a run applied; records are not
duplicated (both evaluated inside the run that applied them); and `batches_applied`: the workflow converges
(no batch past `maxAttempts`, none unapplied beyond `maxLag`), evaluated by the sensor on every change of
state and on demand. Logic in sync/verify.py and sync/reconcile.py.
"""

from __future__ import annotations

import time

import dagster as dg

from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.sync.runtime import ledger_url
from ingest_pipelines.sync.apply_pending import PartitionReport
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.destinations import Destination
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.reconcile import Health, health, max_lag, pending_state
from ingest_pipelines.sync.verify import CheckOutcome

DESTINATION_CHECK = "destination_matches_batch"
RECORDS_CHECK = "no_duplicate_records"
CONVERGENCE_CHECK = "batches_applied"


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


def described(part: PartitionReport, destinations: list[Destination]) -> tuple[CheckOutcome, CheckOutcome]:
    """The partition's two check outcomes with their descriptions (how much was checked where)."""
    copies = len([d for d in destinations if not d.records])
    records = len(destinations) - copies
    part.destinations_check.description = f"{part.destinations_check.checked} object(s) checked in {copies} destination(s)"
    part.records_check.description = f"{part.records_check.checked} record(s) read in {records} records destination(s)"
    return part.destinations_check, part.records_check


def convergence_evaluation(asset_key: dg.AssetKey, result: Health) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=CONVERGENCE_CHECK,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.description,
        metadata=result.metadata(),
    )


def build_convergence_checks(workflow: SyncWorkflow, config: IngestConfig, asset_keys: dict[str, dg.AssetKey]) -> list:
    """`batches_applied` on each asset; executing it from the UI reads the ledger now."""
    checks = []
    for asset, key in asset_keys.items():

        def make(asset: str = asset, key: dg.AssetKey = key) -> dg.AssetChecksDefinition:
            @dg.asset_check(
                asset=key,
                name=CONVERGENCE_CHECK,
                description=(
                    f"The workflow converges: no {asset} batch failed maxAttempts ({workflow.maxAttempts or 'no limit'}) times, "
                    f"none is unapplied for longer than maxLag ({max_lag(workflow):g}s). The sensor evaluates it as state changes."
                ),
            )
            def batches_applied() -> dg.AssetCheckResult:
                ledger = SyncLedger(ledger_url(workflow, config))
                result = health(pending_state(ledger, workflow, time.time()).of_asset(asset), workflow)
                return dg.AssetCheckResult(
                    passed=result.passed, severity=dg.AssetCheckSeverity.ERROR, description=result.description, metadata=result.metadata()
                )

            return batches_applied

        checks.append(make())
    return checks
