"""The `pennsieve` workflow kind's options in ingest.yaml: where the Pennsieve API is and what each import is.

One import per sub-folder (or sub-prefix) of the source; the callback token is a secret ($VAR -> Dagster EnvVar).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from ingest_pipelines.config import Duration, SecretField, WorkflowConfig, register_kind

DEFAULT_API_HOST = "https://api2.pennsieve.net"
DEFAULT_IMPORT_TYPE = "viewerAssets"
DEFAULT_ASSET_TYPE = "parquet-umap-viewer"


@register_kind("pennsieve")
class PennsieveWorkflow(WorkflowConfig):
    kind: str = "pennsieve"
    #: the Pennsieve API (the seed's PENNSIEVE_API_HOST2).
    apiHost: str = DEFAULT_API_HOST
    #: target dataset (DATASET_ID); a run may override it in its run config.
    datasetId: str
    #: target package (PACKAGE_ID); "default" looks it up from the execution run's single data source.
    packageId: str = "default"
    #: the workflow-service execution run the callback token belongs to (EXECUTION_RUN_ID); also the import's integration_id.
    executionRunId: str
    #: the orchestrator's callback token (CALLBACK_TOKEN): write it as $VAR so Dagster sees only EnvVar("VAR").
    callbackToken: SecretField
    #: the seed's IMPORT_TYPE / ASSET_TYPE.
    importType: str = DEFAULT_IMPORT_TYPE
    assetType: str = DEFAULT_ASSET_TYPE
    #: a JSON file inside each import folder whose content becomes options.properties (not uploaded).
    propertiesFile: str | None = None
    #: ORGANIZATION_ID, for logs only.
    organizationId: str | None = None
    #: files uploaded at once inside a run (parts of large files share the same pool).
    uploadThreads: int = Field(default=8, ge=1, le=64)
    #: a folder is imported once its newest file is at least this old (files still arriving are left for later).
    settleDelay: Duration = 10.0

    requires_source: ClassVar[bool] = True
    requires_destinations: ClassVar[bool] = False
    max_destinations: ClassVar[int | None] = 0
    secret_fields: ClassVar[tuple[str, ...]] = ("callbackToken",)

    @field_validator("apiHost")
    @classmethod
    def _api_host(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("apiHost must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("propertiesFile")
    @classmethod
    def _inside_the_folder(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or ".." in value.replace("\\", "/").split("/")):
            raise ValueError("propertiesFile is a path inside each import folder (no leading '/', no '..')")
        return value

    @field_validator("callbackToken")
    @classmethod
    def _token_required(cls, value: object) -> object:
        if value is None:
            raise ValueError("callbackToken is required (write it as $VAR)")
        return value
