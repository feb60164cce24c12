"""The folders sensor: lists the source's sub-folders, adds a partition for each new settled folder and runs its import.

Its cursor is where the listing stopped (large sources are listed over several ticks); partitions record what was seen.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import dagster as dg
import orjson

from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.pennsieve.config import PennsieveWorkflow
from ingest_pipelines.pennsieve.inputs import folder_readiness, list_folders

#: a tick stops after this long and resumes from its cursor (ticks must stay well under Dagster's 60 s).
TICK_SECONDS = 20.0
PAGE_SIZE = 200


def build_folders_sensor(
    workflow: PennsieveWorkflow, partitions: dg.DynamicPartitionsDefinition, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    source_key = store_resource_key("source", workflow.source or "")

    @dg.sensor(
        name=f"{dagster_name(workflow.name)}__folders_sensor",
        job=job,
        minimum_interval_seconds=int(workflow.interval),
        default_status=dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={source_key},
        description=f"New settled sub-folders of source {workflow.source!r} -> one partition and one import run each.",
    )
    def folders_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        store = getattr(context.resources, source_key).get_store()
        after = orjson.loads(context.cursor).get("after") if context.cursor else None
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
                requests.append(
                    dg.RunRequest(partition_key=name, run_key=f"{name}:{readiness.fingerprint}", tags={"ingest/workflow": workflow.name})
                )
            if stopped_early or not more or time.monotonic() > deadline:
                break
        finished_pass = not stopped_early and not more
        cursor = orjson.dumps({"after": None if finished_pass else after}).decode()
        if not requests:
            return dg.SensorResult(skip_reason=f"no new settled folders ({waiting} still settling)", cursor=cursor)
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=[partitions.build_add_request(added)], cursor=cursor)

    return folders_sensor
