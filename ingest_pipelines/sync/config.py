"""The `sync` workflow kind's options in ingest.yaml (beyond the common connylabs keys)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ingest_pipelines.config import Duration, WorkflowConfig, register_kind

#: the most a sensor tick may spend listing (Dagster's sensor timeout is 60 s; the commit follows).
MAX_TICK_SECONDS = 45.0


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
    #: keys per listing request (S3's MaxKeys; at most 1000).
    pageSize: int = Field(default=1000, ge=1, le=1000)
    #: SQLAlchemy URL of the ledger (applied changes, key index, scan state); default SQLite
    #: `sync-ledger.sqlite` in the state folder (or $DAGSTER_HOME when the state is in S3).
    ledger: str | None = None
    #: change times older than this day count in its first hour (the `changes` partitions are the hours
    #: that had changes, added as their batches are committed).
    changesStart: str | None = None
    #: a run applies pending batches for at most this long / this many batches (0: no limit), then ends;
    #: the sensor requests the next run for the rest.
    runSeconds: Duration = 600.0
    maxBatchesPerRun: int = Field(default=0, ge=0)
    #: a batch committed longer ago than this and still unapplied fails the `batches_applied` check
    #: (default: 10 x interval, at least 15 min).
    maxLag: Duration | None = None

    @field_validator("shards")
    @classmethod
    def _distinct_shards(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a shard prefix is listed twice")
        if any(not shard for shard in value):
            raise ValueError("a shard prefix must not be empty (omit `shards` for one shard `all`)")
        for shard in value:
            # shards are Dagster partition keys: `...` means a range there, control characters do not display
            if "..." in shard or any(ord(char) < 32 for char in shard):
                raise ValueError(f"shard prefix {shard!r} cannot be a Dagster partition key (no '...' or control characters)")
        return value

    @field_validator("tickSeconds")
    @classmethod
    def _tick_under_sensor_timeout(cls, value: float) -> float:
        # Dagster abandons a sensor evaluation after 60 s; the tick must end well before
        if not 0 < value <= MAX_TICK_SECONDS:
            raise ValueError(f"tickSeconds must be more than 0s and at most {MAX_TICK_SECONDS:g}s (Dagster's sensor timeout is 60s)")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook {value!r} is not an http(s) URL")
        return value

    @field_validator("changesStart")
    @classmethod
    def _start_date(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"changesStart {value!r} must be a date YYYY-MM-DD") from None
        return value

    def shard_keys(self) -> list[str]:
        """Partition keys of the snapshot asset: the shard prefixes, or `all`."""
        return list(self.shards) or ["all"]

    def shard_prefix(self, shard: str) -> str:
        return "" if shard == "all" and not self.shards else shard
