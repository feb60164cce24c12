"""The `import_complete` check: a partition's import finished and its folder still holds what was imported.

Reads the manifest and lists the folder; no Pennsieve call. Fails (ERROR) when unfinished, WARN when the folder changed since.
"""

import dagster as dg

from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.pennsieve.assets import import_asset_key
from ingest_pipelines.defs.pennsieve.partitions import manifest_key
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.pennsieve.config import PennsieveWorkflow
from ingest_pipelines.pennsieve.imports import COMPLETE, changes_since
from ingest_pipelines.pennsieve.inputs import ImportInputs


def build_import_check(
    workflow: PennsieveWorkflow, config: IngestConfig, partitions: dg.DynamicPartitionsDefinition
) -> dg.AssetChecksDefinition:
    source_key = store_resource_key("source", workflow.source or "")

    @dg.asset_check(
        asset=import_asset_key(workflow),
        name="import_complete",
        partitions_def=partitions,
        required_resource_keys={source_key, STATE_RESOURCE_KEY},
        description="The import finished (every file uploaded) and the folder has not changed since.",
    )
    def import_complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        folder = context.partition_key
        manifest = getattr(context.resources, STATE_RESOURCE_KEY).get_state().get_json(manifest_key(workflow, folder))
        inputs = ImportInputs(getattr(context.resources, source_key).get_store(), folder, workflow.propertiesFile)
        files = inputs.files()
        if manifest is None:
            passed = not files
            return dg.AssetCheckResult(
                passed=passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"files": len(files), "reason": "empty folder, nothing to import" if passed else "no import recorded"},
            )
        changes = changes_since(manifest, files)
        metadata = {"import_id": manifest.get("import_id") or "", "status": manifest["status"], "files": len(manifest["files"])}
        if manifest["status"] != COMPLETE:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={**metadata, "reason": manifest.get("last_error") or "import unfinished; re-run the partition to resume"},
            )
        if changes:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={**metadata, "reason": "folder changed after the import: " + "; ".join(changes)},
            )
        return dg.AssetCheckResult(passed=True, metadata=metadata)

    return import_complete
