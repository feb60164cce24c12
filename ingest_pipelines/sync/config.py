"""The `sync` workflow kind's options in ingest.yaml (beyond the common connylabs keys)."""

from __future__ import annotations

from pydantic import Field

from ingest_pipelines.config import Duration, WorkflowConfig, register_kind


@register_kind("sync")
class SyncWorkflow(WorkflowConfig):
    kind: str = "sync"
    #: snapshot shards: key prefixes (relative to the source prefix); one shard `all` by default.
    shards: list[str] = Field(default_factory=list)
    #: objects younger than this are left for the next tick (late arrivals, same-second ties).
    settleDelay: Duration = 2.0
    #: S3 calls in flight inside a run.
    threads: int = Field(default=16, ge=1, le=256)
    #: a sensor tick stops listing after this long / this many pages and resumes next tick.
    tickSeconds: Duration = 20.0
    maxPagesPerTick: int = Field(default=50, ge=1)
