"""The bundle asset's check, per partition: the job is OK and complete, and the archive holds exactly the
files listed in its metadata.json (right sizes) and nothing else."""

import json

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import METADATA_JSON, parse_metadata
from ingest_pipelines.bundles.jobs import STATE_OK, JobStore
from ingest_pipelines.bundles.staging import ArchiveLayout
from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.bundles.jobs import bundle_asset_key
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.storage import ObjectStore


def archive_problems(archive: ObjectStore, layout: ArchiveLayout) -> dict[str, list[str]]:
    """Missing, unexpected and wrongly sized keys of a job's archive folder (relative to the job folder)."""
    found = {info.key[len(layout.final_root) :]: info.size for info in archive.list(layout.final_root)}
    if METADATA_JSON not in found:
        return {"missing": [METADATA_JSON], "unexpected": sorted(found), "wrong_size": []}
    metadata = parse_metadata(archive.get_bytes(layout.final_key(METADATA_JSON)))
    expected = {path: entry.size for path, entry in metadata.files.items()}
    expected[METADATA_JSON] = found[METADATA_JSON]
    return {
        "missing": sorted(set(expected) - set(found)),
        "unexpected": sorted(set(found) - set(expected)),
        "wrong_size": sorted(path for path in set(found) & set(expected) if found[path] != expected[path]),
    }


def build_archive_check(workflow: BundleWorkflow, config: IngestConfig, partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    destination_key = store_resource_key("destination", workflow.destinations[0])
    jobs_url = workflow.jobs_url(config)

    @dg.asset_check(
        asset=bundle_asset_key(workflow),
        name="archive_matches_metadata",
        partitions_def=partitions,
        required_resource_keys={destination_key},
        description="The job is OK and complete; the archive holds exactly the listed files and metadata.json.",
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
                **{name: dg.MetadataValue.json(json.loads(json.dumps(keys[:50]))) for name, keys in problems.items()},
            },
        )

    return archive_matches_metadata
