"""The drop sensor of a bundle workflow: new *.tar / *.tar.gz in the drop location become jobs, and on every tick
every unfinished job of the workflow (whatever its origin) is reconciled: a run requested for a new job or a
retry that is due, a dead or never-started run's job retried or FAILED (bundles/attempts.py)."""

import json
import time
from typing import Any

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.drop import scan_drop
from ingest_pipelines.bundles.jobs import JobState, JobStore
from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.bundles.reconcile import attempt_run_key, attempt_tags, reconciler_for
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.defs.ticks import min_interval_seconds

#: at most this many seconds of a tick go to reconciling (the listing has its own `tickSeconds`)
RECONCILE_SECONDS = 20.0


def _status(workflow: BundleWorkflow) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED


def drop_sensor_name(workflow: BundleWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__drop_sensor"


def build_drop_sensor(
    workflow: BundleWorkflow, config: IngestConfig, partitions: dg.DynamicPartitionsDefinition, job: Any
) -> dg.SensorDefinition:
    source_key = store_resource_key("source", workflow.source or "")
    destination_key = store_resource_key("destination", workflow.destinations[0])
    jobs_url = workflow.jobs_url(config)

    @dg.sensor(
        name=drop_sensor_name(workflow),
        job=job,
        minimum_interval_seconds=min_interval_seconds(workflow.interval),
        default_status=_status(workflow),
        required_resource_keys={source_key, destination_key},
        description=(
            f"New bundles ({', '.join(workflow.patterns)}) in the drop location of workflow {workflow.name!r}; "
            "reconciles every unfinished job (retries with backoff, FAILED when stuck)."
        ),
    )
    def drop_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        store = getattr(context.resources, source_key).get_store()
        archive = getattr(context.resources, destination_key).get_store()
        jobs = JobStore(jobs_url)
        scan = scan_drop(store, jobs, workflow, cursor.get("after"), workflow.maxPagesPerTick, workflow.tickSeconds)
        requested: list[JobState] = []

        def launch(claimed: JobState) -> None:
            requested.append(claimed)  # the run is created by the daemon from this tick's run requests

        reconciler = reconciler_for(context.instance, workflow, config, store, archive)
        report = reconciler.reconcile(launch, deadline=time.monotonic() + RECONCILE_SECONDS)
        context.log.info(
            f"listed {scan.listed} objects, {len(scan.new_jobs)} new bundle(s)"
            + (" (end of listing)" if scan.wrapped else "")
            + f"; jobs: {report.summary()}"
        )
        for note in report.notes[:20]:
            context.log.info(note)
        keys = [str(claimed.job_id) for claimed in requested]
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=attempt_run_key(claimed), partition_key=str(claimed.job_id), tags=attempt_tags(claimed))
                for claimed in requested
            ],
            dynamic_partitions_requests=[partitions.build_add_request(keys)] if keys else [],
            cursor=json.dumps({"after": scan.after}),
        )

    return drop_sensor
