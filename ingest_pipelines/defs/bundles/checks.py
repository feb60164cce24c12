"""The bundle asset's check, per partition: the job is OK and complete, and the archive holds exactly the
files listed in its metadata.json (right sizes) and nothing else. A job folder without metadata.json is incomplete."""

import json

import dagster as dg

from ingest_pipelines.bundles.archive import ArchiveLayout, archive_problems
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import METADATA_JSON
from ingest_pipelines.bundles.jobs import STATE_OK, JobStore
from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.bundles.jobs import bundle_asset_key
from ingest_pipelines.defs.resources import store_resource_key


def build_archive_check(workflow: BundleWorkflow, config: IngestConfig, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    destination_key = store_resource_key("destination", workflow.destinations[0])
    jobs_url = workflow.jobs_url(config)

    @dg.asset_check(
        asset=bundle_asset_key(workflow),
        name="archive_matches_metadata",
        partitions_def=partitions,
        required_resource_keys={destination_key},
        description=(
            "The job is OK and complete; the archive holds exactly the listed files and metadata.json "
            "(written last: a job folder without it is incomplete)."
        ),
    )
    def archive_matches_metadata(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        job_id = int(context.partition_key)
        job = JobStore(jobs_url).get(job_id)
        archive = getattr(context.resources, destination_key).get_store()
        problems = archive_problems(archive, ArchiveLayout(job_id, workflow.stagingPrefix))
        passed = job.state == STATE_OK and job.complete and not any(problems.values())
        return dg.AssetCheckResult(
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "job_id": job_id,
                "state": job.state,
                "task": job.task,
                "complete": job.complete,
                # metadata.json is written last: without it the folder is incomplete (being written, or being removed)
                "committed": METADATA_JSON not in problems["missing"],
                **{name: dg.MetadataValue.json(json.loads(json.dumps(keys[:50]))) for name, keys in problems.items()},
            },
        )

    return archive_matches_metadata
