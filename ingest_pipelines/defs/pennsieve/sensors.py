"""The folders sensor: lists the source's sub-folders, adds a partition for each new settled folder and runs its import.

Its cursor is where the listing stopped (large sources are listed over several ticks) and the imports it requested:
an import whose run died is requested again after backoff and resumes with its importId (`reconcile.SensorRequests`);
partitions record what was seen.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import orjson

from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs import reconcile
from ingest_pipelines.defs.pennsieve.assets import import_asset_key
from ingest_pipelines.defs.reconcile import SensorRequests, TrackedRequest
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.defs.ticks import min_interval_seconds
from ingest_pipelines.pennsieve.config import PennsieveWorkflow
from ingest_pipelines.pennsieve.inputs import folder_readiness, list_folders
from ingest_pipelines.retries import RetryPolicy

#: a tick stops after this long and resumes from its cursor (ticks must stay well under Dagster's 60 s).
TICK_SECONDS = 20.0
PAGE_SIZE = 200
CHECK_NAME = "import_complete"
RERUN = "launch the folder's partition from the asset page (it resumes the same import); a run that succeeds ends it"


def build_folders_sensor(
    workflow: PennsieveWorkflow, partitions: dg.DynamicPartitionsDefinition, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    source_key = store_resource_key("source", workflow.source or "")
    policy = RetryPolicy.of(workflow)
    asset_key = import_asset_key(workflow)
    job_name = job.name

    def matches(run: dg.DagsterRun, request: TrackedRequest) -> bool:
        """A run of the folder's import: the job's, or one selecting the asset (UI Materialize)."""
        return run.job_name == job_name or bool(run.asset_selection and asset_key in run.asset_selection)

    @dg.sensor(
        name=f"{dagster_name(workflow.name)}__folders_sensor",
        job=job,
        minimum_interval_seconds=min_interval_seconds(workflow.interval),
        default_status=dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={source_key},
        description=f"New settled sub-folders of source {workflow.source!r} -> one partition and one import run each.",
    )
    def folders_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        store = getattr(context.resources, source_key).get_store()
        state = orjson.loads(context.cursor) if context.cursor else {}
        after = state.get("after")
        now_seconds = reconcile.clock()
        tracked = SensorRequests.from_cursor(state.get("requests"), policy, workflow.launchTimeout)
        known = set(context.instance.get_dynamic_partitions(partitions.name))
        deadline = time.monotonic() + TICK_SECONDS
        now = datetime.now(UTC)
        added: list[str] = []
        requests: list[dg.RunRequest] = []
        waiting = 0
        while True:
            names, more = list_folders(store, after, PAGE_SIZE)
            stopped_early = False
            for name in names:
                if len(requests) >= workflow.batchSize or time.monotonic() > deadline:
                    stopped_early = True
                    break
                after = name
                if name in known:
                    continue
                if not name or any(bad in name for bad in ("...", "\n", "\r", "\t", "\0")):
                    context.log.warning("folder %r cannot be a partition key; skipped", name)
                    continue
                readiness = folder_readiness(store, name, workflow.propertiesFile, now, workflow.settleDelay)
                if not readiness.ready:
                    waiting += 1
                    continue
                added.append(name)
                run_key = f"{name}:{readiness.fingerprint}"
                requests.append(tracked.track(name, name, run_key, {"ingest/workflow": workflow.name}, now_seconds))
            if stopped_early or not more or time.monotonic() > deadline:
                break
        finished_pass = not stopped_early and not more
        # the imports requested before: one whose run died is requested again (it resumes its importId)
        settled = reconcile.reconcile_requests(context, tracked, matches, now_seconds, asset_key, CHECK_NAME, RERUN)
        cursor = orjson.dumps({"after": None if finished_pass else after, "requests": tracked.to_cursor()}).decode()
        requests.extend(settled.run_requests)
        if not requests:
            reason = f"no new settled folders ({waiting} still settling)" + (
                f"; followed imports: {settled.summary}" if settled.summary else ""
            )
            return dg.SensorResult(skip_reason=reason, cursor=cursor, asset_events=settled.checks)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(added)] if added else [],
            cursor=cursor,
            asset_events=settled.checks,
        )

    return folders_sensor
