"""The bundle asset: one partition per Pacifica job; a run validates the tar and ingests it into the archive.

The job state follows the run: a rejected bundle fails the run and marks the job FAILED at its task; any other
error fails the run and leaves the job to reconciliation (retried). A run of an attempt that is no longer the
job's current one stops without touching anything.
"""

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import BundleError
from ingest_pipelines.bundles.ingest import run_job
from ingest_pipelines.bundles.jobs import JobStore, StaleAttempt
from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.bundles.jobs import bundle_asset_key
from ingest_pipelines.defs.bundles.reconcile import run_attempt
from ingest_pipelines.defs.partition_runs import require_no_other_run
from ingest_pipelines.defs.resources import store_resource_key


def build_bundle_asset(workflow: BundleWorkflow, config: IngestConfig, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    source_key = store_resource_key("source", workflow.source or "")
    destination_key = store_resource_key("destination", workflow.destinations[0])
    jobs_url = workflow.jobs_url(config)
    destination = config.destination(workflow.destinations[0])

    @dg.asset(
        key=bundle_asset_key(workflow),
        partitions_def=partitions,
        required_resource_keys={source_key, destination_key},
        description=(
            f"Bundles of workflow {workflow.name!r} validated and archived at {destination.uri()}{{job_id}}/ (partition = Pacifica job id)."
        ),
        kinds={"s3"} if destination.type == "s3" else None,
        group_name=dagster_name(workflow.name),
        metadata={"archive": destination.uri()},
    )
    def bundle(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        job_id = int(context.partition_key)
        require_no_other_run(context)
        jobs = JobStore(jobs_url)
        source = getattr(context.resources, source_key).get_store()
        archive = getattr(context.resources, destination_key).get_store()
        record = context.instance.get_run_record_by_id(context.run_id)
        attempt = run_attempt(context.dagster_run)
        try:
            outcome = run_job(
                workflow,
                jobs,
                job_id,
                source,
                archive,
                run_id=context.run_id,
                run_created=record.create_timestamp if record else None,
                attempt=attempt,
            )
        except StaleAttempt as exc:
            raise dg.Failure(description=str(exc), metadata={"job_id": job_id, "attempt": attempt or 0}, allow_retries=False) from None
        except BundleError as exc:
            raise dg.Failure(
                description=f"job {job_id} FAILED at {exc.task!r}: {exc.message}",
                metadata={"job_id": job_id, "state": "FAILED", "task": exc.task, "exception": exc.message},
                allow_retries=False,
            ) from None
        job = outcome.job
        metadata: dict[str, object] = {
            "job_id": job_id,
            "attempt": job.attempt,
            "state": job.state,
            "task": job.task,
            "task_percent": job.task_percent,
            "source": source.uri(job.source_key or ""),
            "archive": dg.MetadataValue.url(archive.uri(f"{job_id}/")),
        }
        if outcome.skipped:
            context.log.info(f"job {job_id} was already ingested; nothing to do")
            metadata["skipped"] = True
        elif outcome.result is not None:
            result = outcome.result
            metadata.update(
                files=result.files,
                bytes=result.bytes,
                source_bytes=result.source_bytes,
                seconds=round(result.seconds, 3),
                mb_per_second=round(result.bytes / 1e6 / result.seconds, 2) if result.seconds else 0.0,
            )
        return dg.MaterializeResult(metadata=metadata)

    return bundle
