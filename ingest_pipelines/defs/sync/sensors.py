"""The sync sensor `<dname>__sync_sensor`: one bounded tick of change detection (commits change batches),
then reconciliation: while batches are pending and no run of the workflow is queued or in progress, it
requests a `<dname>__apply_job` run, whatever happened to earlier runs (failed, canceled, died, never
launched). Failed attempts wait for their retry (doubling from `retryDelay`); a batch past `maxAttempts` or
older than `maxLag` fails the `batches_applied` check and shows in the tick's skip reason.
"""

from __future__ import annotations

import time
from typing import Any

import dagster as dg
import orjson

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.defs.runs import NO_DAGSTER_RETRIES, unfinished_runs
from ingest_pipelines.defs.sync.checks import convergence_evaluation
from ingest_pipelines.defs.sync.jobs import SERIAL_TAG, WORKFLOW_TAG, apply_job_name
from ingest_pipelines.defs.sync.runtime import SyncRuntime
from ingest_pipelines.defs.ticks import min_interval_seconds
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.reconcile import describe_waiting, health, pending_state
from ingest_pipelines.sync.tick import run_tick

#: the sensor ticks at least this often, whatever `interval` says: `interval` spaces the listing passes,
#: while reconciliation (retries after `retryDelay`), the snapshot, events and a pass in progress go on
#: at every tick (an idle tick is a ledger query)
TICK_SECONDS = 15


def sensor_interval(workflow: SyncWorkflow) -> int:
    """The sensor's minimum_interval_seconds: a tick every `interval`, at least every TICK_SECONDS."""
    return min_interval_seconds(min(workflow.interval, TICK_SECONDS))


#: a failing `batches_applied` evaluation is repeated this often (its description follows the lag).
REPEAT_FAILING_SECONDS = 600.0
#: batch tag value on apply runs: the first batch due when the run was requested
FIRST_BATCH_TAG = "ingest/first_batch"


def build_sensor(
    workflow: SyncWorkflow, config: IngestConfig, jobs: list, asset_keys: dict[str, dg.AssetKey], hours: dg.DynamicPartitionsDefinition
) -> dg.SensorDefinition:
    dname = dagster_name(workflow.name)
    job_name = apply_job_name(workflow)

    @dg.sensor(
        name=f"{dname}__sync_sensor",
        minimum_interval_seconds=sensor_interval(workflow),
        default_status=dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={store_resource_key("source", workflow.source or ""), STATE_RESOURCE_KEY},
        jobs=jobs,
        description=(
            f"Change capture for sync workflow {workflow.name}: snapshot, then listing passes (or S3 events) compared with "
            f"the key index; commits change batches and keeps a run going while batches are pending."
        ),
    )
    def sync_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        runtime = SyncRuntime(workflow, config, context.resources)
        outcome = run_tick(workflow, runtime.source, runtime.ledger)
        now = time.time()
        state = pending_state(runtime.ledger, workflow, now)
        context.log.info(
            f"{workflow.name}: {len(outcome.batches)} new batch(es), {outcome.pages} page(s), {outcome.messages} message(s), "
            f"{outcome.seconds:.1f}s, counts {outcome.counts}; {len(state.pending)} batch(es) pending"
        )
        previous = _memory(context.cursor)
        # the hours of the committed change batches become partitions of the changes asset (all of them once,
        # for a ledger that predates dynamic hours, so existing partition keys stay)
        new_hours = {b.partition for b in outcome.batches if b.asset == "changes"}
        if not previous.get("hours_added"):
            new_hours.update(runtime.ledger.committed_partitions(workflow.name, "changes"))
        partitions = [hours.build_add_request(sorted(new_hours))] if new_hours else []
        events, memory = [], {}
        stuck = []
        for asset, key in asset_keys.items():
            result = health(state.of_asset(asset), workflow, now)
            memory[asset] = [result.passed, previous.get(asset, [None, 0.0])[1]]
            if not result.passed:
                stuck.append(result.description)
                context.log.error(f"{workflow.name} ({asset}): {result.description}")
            last_passed, emitted_at = previous.get(asset, [None, 0.0])
            if last_passed != result.passed or (not result.passed and now - emitted_at >= REPEAT_FAILING_SECONDS):
                events.append(convergence_evaluation(key, result))
                memory[asset] = [result.passed, now]
        cursor = _cursor(outcome.cursor.to_json(), memory)

        running = unfinished_runs(context.instance, {SERIAL_TAG: dname}, limit=3)
        due = state.due
        if due and not running:
            runtime.ledger.record_requests(workflow.name, [b.batch_id for b in due])
            first = due[0]
            request = dg.RunRequest(
                run_key=f"{dname}-apply-{first.batch_id}-{first.tries + 1}-{int(now)}",
                job_name=job_name,
                tags={SERIAL_TAG: dname, WORKFLOW_TAG: workflow.name, FIRST_BATCH_TAG: first.batch_id, **NO_DAGSTER_RETRIES},
            )
            context.log.info(f"{workflow.name}: requesting a run for {len(due)} due batch(es), first {first.batch_id}")
            return dg.SensorResult(run_requests=[request], cursor=cursor, asset_events=events, dynamic_partitions_requests=partitions)
        if running:
            run = running[0]
            started = run.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)
            doing = "is applying" if started else "is queued to apply"
            reason = f"run {run.run_id} ({run.status.value}) {doing}; {len(state.pending)} batch(es) pending"
        elif state.pending:
            reason = describe_waiting(state, workflow, now)
        else:
            reason = outcome.skip_reason or "no changes"
        if stuck:
            reason = "; ".join(stuck) + " | " + reason
        return dg.SensorResult(skip_reason=reason, cursor=cursor, asset_events=events, dynamic_partitions_requests=partitions)

    return sync_sensor


def _memory(cursor: str | None) -> dict[str, Any]:
    """What the sensor remembers besides the scan: the last `batches_applied` evaluation per asset
    ({asset: [passed, unix time]}) and whether every committed hour was added as a partition."""
    if not cursor:
        return {}
    try:
        doc = orjson.loads(cursor)
        return {**(doc.get("health") or {}), "hours_added": bool(doc.get("hours_added"))}
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return {}


def _cursor(scan: str, memory: dict[str, Any]) -> str:
    """Dagster's cursor: the scan cursor (the ledger holds the real one) plus the sensor's memory."""
    doc = orjson.loads(scan)
    doc["health"] = memory
    doc["hours_added"] = True
    return orjson.dumps(doc).decode()
