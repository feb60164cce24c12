"""The files of one import: everything under a folder of a store (a local directory or an S3 prefix).

The properties file is read into options.properties and is not uploaded; sub-folders of a source are the imports.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.pennsieve.client import PennsieveError
from ingest_pipelines.storage import ObjectStore
from ingest_pipelines.storage.filesystem import FilesystemStore

log = logging.getLogger(__name__)


class ImportInputError(PennsieveError):
    """The input of an import is unusable (unreadable properties file, missing folder)."""


@dataclass(frozen=True)
class InputFile:
    """One file to import: `file_path` is its path relative to the import folder (what Pennsieve shows)."""

    file_path: str
    size: int
    #: the key in the store (relative to the store's prefix).
    key: str
    #: set for local files, so the upload reads the file itself (seekable, parallel parts).
    local_path: Path | None = None


def _folder_prefix(folder: str) -> str:
    folder = folder.strip("/")
    return f"{folder}/" if folder else ""


class ImportInputs:
    """The files under `folder` of `store`, minus the properties file (a name relative to the folder)."""

    def __init__(self, store: ObjectStore, folder: str = "", properties_file: str | None = None):
        self.store = store
        self.folder = _folder_prefix(folder)
        self.properties_file = properties_file or None

    @classmethod
    def local(cls, input_dir: str | os.PathLike[str], properties_file: str | None = None) -> ImportInputs:
        """INPUT_DIR of the ECS/Lambda target."""
        root = Path(input_dir)
        if not root.is_dir():
            raise ImportInputError(f"INPUT_DIR {str(root)!r} is not a directory")
        store = FilesystemStore(FilesystemStoreConfig(name="input", path=str(root)))
        return cls(store, "", properties_file)

    def __repr__(self) -> str:
        return f"ImportInputs({self.store.uri(self.folder)})"

    def uri(self) -> str:
        return self.store.uri(self.folder)

    def _properties_key(self) -> str | None:
        """The properties file's key; it must be inside the input folder (the seed: "JSON file in INPUT_DIR")."""
        if not self.properties_file:
            return None
        name = self.properties_file
        if os.path.isabs(name) and isinstance(self.store, FilesystemStore):
            path = Path(name).resolve()
            if self.store.root in path.parents:
                return path.relative_to(self.store.root).as_posix()
        elif ".." not in name.replace("\\", "/").split("/"):
            return self.folder + name.lstrip("/")
        # a run config may name it: never read (and send to Pennsieve) a file outside the input
        raise ImportInputError(f"properties file {name!r} must be inside the input folder {self.uri()}")

    def files(self) -> list[InputFile]:
        """Every file under the folder, recursively, in key order; the properties file left out."""
        skip = self._properties_key()
        local = self.store if isinstance(self.store, FilesystemStore) else None
        found = []
        for info in self.store.list(self.folder):
            if info.key == skip or info.key.endswith("/"):
                continue
            found.append(
                InputFile(
                    file_path=info.key[len(self.folder) :],
                    size=info.size,
                    key=info.key,
                    local_path=local.path(info.key) if local else None,
                )
            )
        return found

    def read_properties(self) -> dict[str, Any]:
        """options.properties: the properties file's JSON object; {} (with a warning) when it is missing."""
        if not self.properties_file:
            return {}
        key = self._properties_key()
        assert key is not None
        where = self.store.uri(key)
        if self.store.head(key) is None:
            log.warning("properties file %s not found; using {}", where)
            return {}
        raw = self.store.get_bytes(key)
        try:
            properties = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ImportInputError(f"properties file {where}: not valid JSON: {exc}") from exc
        if not isinstance(properties, dict):
            raise ImportInputError(f"properties file {where}: expected a JSON object, got {type(properties).__name__}")
        return properties

    def open(self, item: InputFile) -> BinaryIO:
        return self.store.open(item.key)


def list_folders(store: ObjectStore, start_after: str | None = None, limit: int = 1000) -> tuple[list[str], bool]:
    """The immediate sub-folders of a store (names without '/'), after `start_after`, at most `limit`; (names, more)."""
    from ingest_pipelines.storage.s3 import S3Store

    if isinstance(store, S3Store):
        kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": store.prefix, "Delimiter": "/", "MaxKeys": limit}
        if start_after:
            # "0" is the character after "/": past every key of that folder, before any later folder
            kwargs["StartAfter"] = store.full_key(start_after + "0")
        page = store.client.list_objects_v2(**kwargs)
        names = [store.relative_key(item["Prefix"]).rstrip("/") for item in page.get("CommonPrefixes", [])]
        return names, bool(page.get("IsTruncated"))
    if isinstance(store, FilesystemStore) and (not store.prefix or store.prefix.endswith("/")):
        base = store.root / store.prefix
        if not base.is_dir():
            return [], False
        names = sorted(entry.name for entry in os.scandir(base) if entry.is_dir() and not entry.name.startswith(".tmp-"))
    else:
        names = sorted({info.key.split("/", 1)[0] for info in store.list() if "/" in info.key})
    if start_after:
        names = [name for name in names if name > start_after]
    return names[:limit], len(names) > limit


@dataclass(frozen=True)
class FolderReadiness:
    """Whether a folder is ready to import: it has files and none changed within the settle delay."""

    ready: bool
    files: int
    #: changes when the folder's content changes (count, bytes, newest time): part of the sensor's run key.
    fingerprint: str


def folder_readiness(store: ObjectStore, folder: str, properties_file: str | None, now: datetime, settle_seconds: float) -> FolderReadiness:
    inputs = ImportInputs(store, folder, properties_file)
    skip = inputs._properties_key()
    files = total = 0
    newest: datetime | None = None
    for info in store.list(inputs.folder):
        # folder markers ("x/", what the S3 console's "Create folder" writes) are not files, as in files()
        if info.key == skip or info.key.endswith("/"):
            continue
        files += 1
        total += info.size
        newest = info.last_modified if newest is None or info.last_modified > newest else newest
    settled = newest is not None and (now - newest).total_seconds() >= settle_seconds
    stamp = int(newest.timestamp()) if newest else 0
    return FolderReadiness(ready=files > 0 and settled, files=files, fingerprint=f"{files}-{total}-{stamp}")
