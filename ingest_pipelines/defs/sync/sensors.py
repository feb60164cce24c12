"""The sync sensor `<dname>__sync_sensor`: one bounded tick of change detection, then a run per batch.

run_key = batch id: a tick that re-sends a batch (after a crash) never starts a second run for it.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.defs.sync.assets import SyncRuntime
from ingest_pipelines.defs.sync.jobs import BATCH_TAG, SERIAL_TAG
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.tick import run_tick


def run_request(dname: str, ref: dict[str, str]) -> dg.RunRequest:
    asset = ref["asset"]
    return dg.RunRequest(
        run_key=ref["id"],
        job_name=f"{dname}__{asset}_job",
        partition_key=ref["partition"],
        run_config={"ops": {f"{dname}__{asset}": {"config": {"batch_id": ref["id"]}}}},
        tags={SERIAL_TAG: dname, BATCH_TAG: ref["id"]},
    )


def build_sensor(workflow: SyncWorkflow, config: IngestConfig, jobs: list) -> dg.SensorDefinition:
    dname = dagster_name(workflow.name)

    @dg.sensor(
        name=f"{dname}__sync_sensor",
        minimum_interval_seconds=int(workflow.interval),
        default_status=dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={store_resource_key("source", workflow.source or ""), STATE_RESOURCE_KEY},
        jobs=jobs,
        description=(
            f"Change capture for sync workflow {workflow.name}: snapshot, then listing passes (or S3 events) "
            f"compared with the key index; writes change batches and requests one run per batch."
        ),
    )
    def sync_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        runtime = SyncRuntime(workflow, config, context.resources)
        outcome = run_tick(workflow, runtime.source, runtime.state, runtime.ledger, context.cursor)
        requests = [run_request(dname, ref) for ref in outcome.resend]
        requests += [run_request(dname, batch.ref()) for batch in outcome.batches]
        context.log.info(
            f"{workflow.name}: {len(outcome.batches)} new batch(es), {len(outcome.resend)} re-sent, {outcome.pages} page(s), "
            f"{outcome.messages} message(s), {outcome.seconds:.1f}s, counts {outcome.counts}"
        )
        if not requests:
            return dg.SensorResult(skip_reason=outcome.skip_reason, cursor=outcome.cursor.to_json())
        return dg.SensorResult(run_requests=requests, cursor=outcome.cursor.to_json())

    return sync_sensor
