"""Sensors of a bundle workflow: the drop sensor (new *.tar / *.tar.gz -> job id, dynamic partition, run)
and the run failure sensor (a run that died marks its job FAILED at the task it reached)."""

import json
from typing import Any

import dagster as dg

from ingest_pipelines.bundles.archive import ArchiveLayout, clear_job
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.drop import scan_drop
from ingest_pipelines.bundles.jobs import JobStore
from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.storage import open_store


def _status(workflow: BundleWorkflow) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED


def build_drop_sensor(
    workflow: BundleWorkflow, config: IngestConfig, partitions: dg.DynamicPartitionsDefinition, job: Any
) -> dg.SensorDefinition:
    source_key = store_resource_key("source", workflow.source or "")
    jobs_url = workflow.jobs_url(config)

    @dg.sensor(
        name=f"{dagster_name(workflow.name)}__drop_sensor",
        job=job,
        minimum_interval_seconds=int(workflow.interval),
        default_status=_status(workflow),
        required_resource_keys={source_key},
        description=f"New bundles ({', '.join(workflow.patterns)}) in the drop location of workflow {workflow.name!r}.",
    )
    def drop_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        store = getattr(context.resources, source_key).get_store()
        scan = scan_drop(store, JobStore(jobs_url), workflow, cursor.get("after"), workflow.maxPagesPerTick, workflow.tickSeconds)
        keys = [str(request.job.job_id) for request in scan.requests]
        context.log.info(f"listed {scan.listed} objects; {len(keys)} bundle(s) to ingest" + (" (end of listing)" if scan.wrapped else ""))
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=request.run_key,
                    partition_key=str(request.job.job_id),
                    tags={"ingest/bundle_job": str(request.job.job_id), "ingest/drop_key": request.job.source_key or ""},
                )
                for request in scan.requests
            ],
            dynamic_partitions_requests=[partitions.build_add_request(keys)] if keys else [],
            cursor=json.dumps({"after": scan.after}),
        )

    return drop_sensor


def build_run_failure_sensor(workflow: BundleWorkflow, config: IngestConfig, job: Any) -> dg.SensorDefinition:
    jobs_url = workflow.jobs_url(config)

    @dg.run_failure_sensor(
        name=f"{dagster_name(workflow.name)}__run_failure_sensor",
        monitored_jobs=[job],
        default_status=_status(workflow),
        minimum_interval_seconds=int(workflow.interval),
        description=f"Marks a bundle job FAILED when its run of workflow {workflow.name!r} failed without doing so itself.",
    )
    def run_failure_sensor(context: dg.RunFailureSensorContext) -> None:
        partition = context.dagster_run.tags.get("dagster/partition")
        if not partition or not partition.isdigit():
            return
        jobs = JobStore(jobs_url)
        bundle_job = jobs.find(int(partition))
        if bundle_job is None or bundle_job.complete:
            return
        if bundle_job.run_id not in (None, context.dagster_run.run_id):
            # another run owns the job (e.g. this one stopped because that one was executing): leave both alone
            context.log.info(f"job {bundle_job.job_id} belongs to run {bundle_job.run_id}; not changed")
            return
        message = context.failure_event.message or "run failed"
        jobs.fail(bundle_job.job_id, bundle_job.task, f"Dagster run {context.dagster_run.run_id} failed: {message}")
        context.log.info(f"job {bundle_job.job_id} marked FAILED at {bundle_job.task!r}")
        # a killed run could not remove its staged files itself: no half ingest stays in the archive
        # the store from the loaded config: its secrets are read from the environment when used, as a resource does
        destination = open_store(config.destination(workflow.destinations[0]))
        removed = clear_job(destination, ArchiveLayout(bundle_job.job_id, workflow.stagingPrefix))
        context.log.info(f"job {bundle_job.job_id}: removed {removed} staged or partly promoted objects")

    return run_failure_sensor
