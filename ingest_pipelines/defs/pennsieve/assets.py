"""The import asset: one materialization per partition (folder) = one Pennsieve import, resumed on re-run.

Runs in the Dagster pool `pennsieve`; metadata carries counts, never the token.
"""

import dagster as dg

from ingest_pipelines.config import IngestConfig, dagster_name
from ingest_pipelines.defs.partition_runs import require_no_other_run
from ingest_pipelines.defs.pennsieve.partitions import manifest_key
from ingest_pipelines.defs.pennsieve.resources import api_resource_key
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.pennsieve.client import PennsieveError
from ingest_pipelines.pennsieve.config import PennsieveWorkflow
from ingest_pipelines.pennsieve.imports import ImportRequest, run_import
from ingest_pipelines.pennsieve.inputs import ImportInputs
from ingest_pipelines.pennsieve.upload import UploadSettings

POOL = "pennsieve"


class PennsieveImportConfig(dg.Config):
    """Run config for a launch from the UI: each value left empty uses the workflow's setting."""

    dataset_id: str | None = None
    package_id: str | None = None
    import_type: str | None = None
    asset_type: str | None = None
    properties_file: str | None = None


def import_asset_key(workflow: PennsieveWorkflow) -> dg.AssetKey:
    return dg.AssetKey([dagster_name(workflow.name), "import"])


def build_import_asset(
    workflow: PennsieveWorkflow, config: IngestConfig, partitions: dg.DynamicPartitionsDefinition
) -> dg.AssetsDefinition:
    source_key = store_resource_key("source", workflow.source or "")
    api_key = api_resource_key(workflow)

    @dg.asset(
        key=import_asset_key(workflow),
        partitions_def=partitions,
        pool=POOL,
        required_resource_keys={source_key, STATE_RESOURCE_KEY, api_key},
        group_name=dagster_name(workflow.name),
        kinds={"pennsieve"},
        description=f"Pennsieve imports of the folders of source {workflow.source!r} into dataset {workflow.datasetId} (one partition per folder).",
    )
    def pennsieve_import(context: dg.AssetExecutionContext, config: PennsieveImportConfig) -> dg.MaterializeResult:
        folder = context.partition_key
        require_no_other_run(context)  # two runs of a folder could each create an import
        inputs = ImportInputs(getattr(context.resources, source_key).get_store(), folder, config.properties_file or workflow.propertiesFile)
        request = ImportRequest(
            dataset_id=config.dataset_id or workflow.datasetId,
            package_id=config.package_id or workflow.packageId,
            import_type=config.import_type or workflow.importType,
            asset_type=config.asset_type or workflow.assetType,
        )
        state = getattr(context.resources, STATE_RESOURCE_KEY).get_state()
        key = manifest_key(workflow, folder)
        try:
            with getattr(context.resources, api_key).get_client() as client:
                result = run_import(client, inputs, request, state, key, UploadSettings(threads=workflow.uploadThreads))
        except PennsieveError as exc:
            # the reason on the run page; the manifest keeps what a re-run needs to resume
            manifest = state.get_json(key) or {}
            raise dg.Failure(
                description=f"{inputs.uri()}: {exc}",
                metadata={"folder": inputs.uri(), "import_id": manifest.get("import_id") or "", "manifest": key},
            ) from exc
        metadata: dict[str, object] = {
            "folder": inputs.uri(),
            "dataset_id": request.dataset_id,
            "files": result.files,
            "bytes": result.bytes,
            "uploaded_files": result.uploaded_files,
            "uploaded_bytes": result.uploaded_bytes,
            "skipped_files": result.skipped_files,
            "resumed": result.resumed,
            "duration_seconds": dg.MetadataValue.float(round(result.duration_seconds, 3)),
        }
        if result.import_id:
            metadata.update(import_id=result.import_id, package_id=result.package_id or "")
        else:
            context.log.info("%s: no files, nothing imported", inputs.uri())
        return dg.MaterializeResult(metadata=metadata)

    return pennsieve_import
