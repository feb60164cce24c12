"""The record destination types of ingest.yaml: `s3-records` and `filesystem-records` (Conduit's destination).

Both are plugins of the entry-point group `ingest_pipelines.plugins` (pyproject.toml): destinations only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ingest_pipelines.config import ConfigModel, FilesystemStoreConfig, S3StoreConfig, StoreConfig
from ingest_pipelines.plugins.builtin import open_filesystem, open_s3
from ingest_pipelines.plugins.registry import Plugin

RecordFormat = Literal["json", "parquet"]


class RecordsDestinationConfig(ConfigModel):
    """The keys a record destination adds to its store's keys."""

    #: required, as in Conduit: there is no sensible default between a text and a columnar format.
    format: RecordFormat
    #: the most records one file holds (Conduit's bufferSize).
    bufferSize: int = Field(default=1000, ge=1)
    #: a record stream carries deletes as `delete` records (Conduit does), so unlike `s3` the default is on.
    deletes: bool = True

    # The field comes from the store model this is mixed into, hence check_fields=False.
    @field_validator("metafilesPrefix", check_fields=False)
    @classmethod
    def _no_markers(cls, value: str | None) -> str | None:
        # Markers name copied objects; a record file is not a copy, so the key would be silently ignored.
        if value is not None:
            raise ValueError("not used by record destinations (records are de-duplicated by file name)")
        return value


class S3RecordsConfig(RecordsDestinationConfig, S3StoreConfig):
    """Record files in a bucket under `prefix`; `open_store` gives an S3Store."""

    type: Literal["s3-records"] = "s3-records"


class FilesystemRecordsConfig(RecordsDestinationConfig, FilesystemStoreConfig):
    """Record files in a folder `path` under `prefix`; `open_store` gives a FilesystemStore."""

    type: Literal["filesystem-records"] = "filesystem-records"


def is_records_destination(config: StoreConfig) -> bool:
    """Whether a destination takes change records (files of records) rather than object copies."""
    return isinstance(config, RecordsDestinationConfig)


_DESTINATION = frozenset({"destination"})
s3_records = Plugin(
    config=S3RecordsConfig, store=open_s3, store_roles=_DESTINATION, summary="change records (JSON Lines or Parquet) in a bucket"
)
filesystem_records = Plugin(
    config=FilesystemRecordsConfig,
    store=open_filesystem,
    store_roles=_DESTINATION,
    summary="change records (JSON Lines or Parquet) in a folder",
)
