"""The `inventory` workflow kind's options in ingest.yaml: the indexing gateway, history and limits.

`source` names the s3 source whose bucket + prefix is where S3 Inventory delivers its reports.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from pydantic import Field, field_validator

from ingest_pipelines.config import ConfigModel, Duration, SecretField, WorkflowConfig, register_kind


class GatewayConfig(ConfigModel):
    """The indexing gateway: POST {url}/register with {UserId, Properties, Image}."""

    url: str
    #: calls per second across the run (a token bucket); the Dagster pool `gateway` bounds runs.
    ratePerSecond: float = Field(default=5.0, gt=0)
    #: calls in flight inside one run (still under ratePerSecond).
    concurrency: int = Field(default=2, ge=1, le=64)
    #: attempts per object before it is dead-lettered (the original's queue: 3 receives).
    maxAttempts: int = Field(default=3, ge=1, le=20)
    #: first backoff after a retryable answer (doubles each attempt), and the cap for it and Retry-After.
    backoff: Duration = 1.0
    maxBackoff: Duration = 30.0
    timeout: Duration = 30.0
    #: sent as `x-api-key` when set (API Gateway style); a secret ($VAR).
    apiKey: SecretField = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("gateway url must start with http:// or https://")
        return value.rstrip("/")


@register_kind("inventory")
class InventoryWorkflow(WorkflowConfig):
    kind: str = "inventory"
    gateway: GatewayConfig
    #: SQLAlchemy URL of the import history; default SQLite in the state folder.
    history: str | None = None
    #: where the S3 Batch Operations manifests and result reports go, relative to the source prefix.
    batchManifestPrefix: str = "batch-operations/"
    #: first day of the daily partitions (inventory dates before it cannot be backfilled).
    startDate: date = date(2024, 1, 1)
    #: GetObjectTagging / GetObject / PutObjectTagging calls in flight inside a run.
    threads: int = Field(default=8, ge=1, le=128)
    #: local folder for a run's spill files (the report split by key range, the candidates, the
    #: snapshots, downloaded data files); None: the system's temp folder. Needs ~2x the report's size.
    spillDir: str | None = None
    #: a sensor tick stops after this long / this many list calls and resumes next tick.
    tickSeconds: Duration = 20.0
    maxPagesPerTick: int = Field(default=50, ge=1)

    requires_source: ClassVar[bool] = True
    requires_destinations: ClassVar[bool] = False
    max_destinations: ClassVar[int | None] = 0
    secret_fields: ClassVar[tuple[str, ...]] = ("apiKey",)
