"""The `bundle` workflow kind's options in ingest.yaml: drop location, archive, services, limits.

A bundle workflow reads tar bundles from its `source` (the drop location) into its one destination (the archive).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, field_validator

from ingest_pipelines.config import ConfigModel, Duration, FilesystemStoreConfig, IngestConfig, WorkflowConfig, register_kind

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?B|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "PB": 10**15,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
    "PIB": 2**50,
}


def parse_size(value: Any) -> int:
    """A byte count: an integer, or a number with a unit (`500MB`, `10GiB`)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value!r}: negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"invalid size {value!r} (use bytes or a unit: 500MB, 10GiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").upper()])


ByteSize = Annotated[int, BeforeValidator(parse_size)]


class ServiceConfig(ConfigModel):
    """An optional Pacifica HTTP service (policy or metadata)."""

    url: str
    timeout: Duration = 30.0

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value


#: the drop patterns a bundle object's name must match
DEFAULT_PATTERNS = ("*.tar", "*.tar.gz", "*.tgz")


@register_kind("bundle")
class BundleWorkflow(WorkflowConfig):
    kind: str = "bundle"
    #: POST the metadata here before any file is accepted; the answer must have `status == "success"`.
    policy: ServiceConfig | None = None
    #: PUT the metadata here at "ingest metadata" (besides writing metadata.json to the archive).
    metadataService: ServiceConfig | None = None
    #: SQLAlchemy URL of the job state store; default SQLite `bundle-jobs.db` in the state folder.
    jobs: str | None = None
    #: a bundle with more tar members than this is rejected at "ingest files".
    maxMembers: int = Field(default=100_000, ge=1)
    #: a bundle whose data files add up to more than this is rejected at "ingest files".
    maxTotalSize: ByteSize = 2**40
    #: where versions before write-once staged files (under the destination prefix); only cleaned up now.
    stagingPrefix: str = ".staging/"
    #: object names (after the drop prefix) the sensor picks up.
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_PATTERNS))
    #: where the HTTP front door writes uploaded bundles and move documents, under the source prefix.
    uploadPrefix: str = "uploads/"
    #: a sensor tick lists at most this many pages (1000 keys each) and this long, then resumes.
    maxPagesPerTick: int = Field(default=10, ge=1)
    tickSeconds: Duration = 20.0

    max_destinations: ClassVar[int | None] = 1

    @field_validator("stagingPrefix", "uploadPrefix")
    @classmethod
    def _folder_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            raise ValueError("must be a non-empty folder name without '..'")
        return value + "/"

    def jobs_url(self, config: IngestConfig) -> str:
        """The job store URL: `jobs`, else SQLite in the state folder (or `.ingest-state` beside ingest.yaml)."""
        if self.jobs:
            return self.jobs
        state = config.state_store()
        if isinstance(state, FilesystemStoreConfig):
            folder = Path(state.path)
        else:
            folder = (Path(config.path).resolve().parent if config.path else Path.cwd()) / ".ingest-state"
        return f"sqlite:///{(folder / 'bundle-jobs.db').resolve()}"
