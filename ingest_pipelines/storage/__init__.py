"""Object stores behind one small protocol: keys are relative to the store's prefix.

`open_store(config)` picks the implementation by the config's `type:` (s3, filesystem).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig, StoreConfig


@dataclass(frozen=True)
class ObjectInfo:
    """One object as a listing or a HEAD sees it. `key` is relative to the store's prefix."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    version_id: str | None = None
    content_type: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """What every store offers; implementations may offer more (S3Store.client, copy_from)."""

    config: StoreConfig

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]: ...

    def list_page(self, prefix: str = "", start_after: str | None = None, max_keys: int = 1000) -> tuple[list[ObjectInfo], bool]: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def open(self, key: str) -> BinaryIO: ...

    def get_bytes(self, key: str) -> bytes: ...

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None: ...

    def upload_fileobj(
        self, key: str, fileobj: BinaryIO, content_type: str | None = None, metadata: dict[str, str] | None = None
    ) -> None: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str = "") -> str: ...


class StoreError(RuntimeError):
    """An object store operation failed; the message names the store, the key and the reason."""


def open_store(config: StoreConfig, **kwargs: object) -> ObjectStore:
    """Build the store for a source/destination/state config."""
    if isinstance(config, S3StoreConfig):
        from ingest_pipelines.storage.s3 import S3Store

        return S3Store(config, **kwargs)  # type: ignore[arg-type]
    if isinstance(config, FilesystemStoreConfig):
        from ingest_pipelines.storage.filesystem import FilesystemStore

        return FilesystemStore(config)
    opener = getattr(config, "open_store", None)
    if opener is not None:
        return opener(**kwargs)
    raise StoreError(f"{config.name}: type {config.type!r} is not an object store")
