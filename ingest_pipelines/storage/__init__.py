"""Object stores behind one small protocol: keys are relative to the store's prefix.

`open_store(config)` picks the implementation by the config's `type:` through the plugin registry (built-in:
s3, filesystem, record files; plugin sources and destinations come behind an adapter, plugins/adapters.py).
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


def open_store(config: StoreConfig, role: str | None = None, **kwargs: object) -> ObjectStore:
    """Build the store for a source/destination/state config through its type's plugin (the registry of
    ingest_pipelines.plugins): an object store as it is, a plugin Source or Destination behind its adapter.
    `role` (source, destination, state) picks between a plugin's source and destination; `kwargs` go to object
    stores only (S3: client options, credentials)."""
    from ingest_pipelines.plugins.registry import REGISTRY, PluginLoadError, UnknownType

    try:
        plugin = REGISTRY.plugin(config.type)
    except UnknownType:
        plugin = None
    except PluginLoadError as exc:
        raise StoreError(f"{config.name}: {exc}") from None
    if plugin is not None and isinstance(config, plugin.config):
        if plugin.store is not None and (role is None or role in plugin.store_roles):
            return plugin.store(config, **kwargs)
        factories = {"source": plugin.source, "destination": plugin.destination}
        if role is None:
            offered = [name for name, factory in factories.items() if factory is not None]
            role = offered[0] if len(offered) == 1 else None
            if role is None and plugin.store is None:
                raise StoreError(f"{config.name}: type {config.type!r} is both a source and a destination plugin: say which (role=)")
        factory = factories.get(role or "")
        if factory is not None:
            from ingest_pipelines.plugins.adapters import adapt

            return adapt(config, factory(config), role)  # type: ignore[arg-type]
        if plugin.store is not None or plugin.source is not None or plugin.destination is not None:
            raise StoreError(f"{config.name}: type {config.type!r} cannot be used as a {role}")
    # a model registered in-process without a plugin factory (tests), or one that opens itself
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
