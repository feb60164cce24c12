"""The built-in object-store types `s3` and `filesystem`, registered as plugins like any other (pyproject.toml).

An object store serves every role directly (source, destination, workflow state): no adapter.
"""

from __future__ import annotations

from typing import Any

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.plugins.registry import Plugin

ALL_ROLES = frozenset({"source", "destination", "state"})


def open_s3(config: S3StoreConfig, **kwargs: Any) -> Any:
    from ingest_pipelines.storage.s3 import S3Store  # boto3 loads only when a store is opened

    return S3Store(config, **kwargs)


def open_filesystem(config: FilesystemStoreConfig, **_: Any) -> Any:
    from ingest_pipelines.storage.filesystem import FilesystemStore

    return FilesystemStore(config)


s3 = Plugin(config=S3StoreConfig, store=open_s3, store_roles=ALL_ROLES, summary="S3 or an S3-compatible server (endpoint)")
filesystem = Plugin(config=FilesystemStoreConfig, store=open_filesystem, store_roles=ALL_ROLES, summary="a local folder")
