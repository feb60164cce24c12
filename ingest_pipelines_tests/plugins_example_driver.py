"""Run in a separate interpreter (a venv where examples/ingest-plugin-sqlite is pip-installed): load an ingest.yaml
that uses `type: sqlite-table` and run its sync workflow through Dagster until a change-capture pass completes
and no batch is pending.

Usage: python plugins_example_driver.py <ingest.yaml> <workflow>; prints one JSON line with what happened.
"""

from __future__ import annotations

import json
import sys

import dagster as dg

from ingest_pipelines.config import ConfigError, dagster_name, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.sync.ledger import SyncLedger, default_ledger_url


def main(argv: list[str]) -> int:
    path, workflow = argv
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(json.dumps({"config_error": str(exc)}))
        return 0
    defs = build_definitions(config)
    sensor = defs.resolve_sensor_def(f"{dagster_name(workflow)}__sync_sensor")
    instance = dg.DagsterInstance.get()  # $DAGSTER_HOME
    ledger = SyncLedger(config.workflow(workflow).ledger or default_ledger_url(config))
    saved, _ = ledger.load_scan(workflow)
    start = SyncCursor.from_json(saved).passes if saved else 0
    cursor, runs, failed, checks_failed = None, 0, 0, 0
    for _ in range(50):
        with dg.build_sensor_context(
            instance=instance, cursor=cursor, resources=defs.resources, repository_def=defs.get_repository_def()
        ) as context:
            evaluation = sensor.evaluate_tick(context)
        cursor = evaluation.cursor
        for request in evaluation.run_requests:
            job = defs.resolve_job_def(request.job_name)
            result = job.execute_in_process(
                run_config=request.run_config,
                partition_key=request.partition_key,
                instance=instance,
                tags=request.tags,
                raise_on_error=False,
            )
            runs += 1
            failed += not result.success
            checks_failed += sum(not e.passed for e in result.get_asset_check_evaluations())
        state = SyncCursor.from_json(cursor)
        if state.mode == "cdc" and state.passes > start and not ledger.pending_batches(workflow):
            break
    source = config.source(config.workflow(workflow).source)
    print(json.dumps({"runs": runs, "failed": failed, "checks_failed": checks_failed, "source_type": type(source).__module__}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
