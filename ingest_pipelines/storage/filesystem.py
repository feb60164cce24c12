"""A local folder as an object store: keys are relative paths, writes are atomic (temp file + rename).

ETags are size-mtime pairs, not content hashes, so listing a large folder costs no reads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.storage import ObjectInfo, StoreError


def is_folder_key(key: str) -> bool:
    """A key ending in `/` (the "folder" placeholder S3 consoles create) is a directory here, not a file:
    as a file it would block every key below it."""
    return key.endswith("/")


class FilesystemStore:
    def __init__(self, config: FilesystemStoreConfig):
        self.config = config
        self.root = Path(config.path).resolve()
        self.prefix = config.prefix

    def __repr__(self) -> str:
        return f"FilesystemStore({self.config.name}: {self.root})"

    def path(self, key: str) -> Path:
        """The file for a key; a key that would leave the root is refused."""
        full = (self.root / (self.prefix + key)).resolve()
        if full != self.root and self.root not in full.parents:
            raise StoreError(f"{self.config.name}: key {key!r} resolves outside {self.root}")
        return full

    def uri(self, key: str = "") -> str:
        return (self.root / (self.prefix + key)).as_uri()

    def _info(self, path: Path) -> ObjectInfo:
        stat = path.stat()
        rel = path.relative_to(self.root).as_posix()
        return ObjectInfo(
            key=rel[len(self.prefix) :] if rel.startswith(self.prefix) else rel,
            size=stat.st_size,
            etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
            last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
        )

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every file in key order (like S3), skipping in-progress temp files."""
        full_prefix = self.prefix + prefix
        if not self.root.exists():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel.startswith(full_prefix):
                    keys.append(rel)
        keys.sort()
        start = self.prefix + start_after if start_after else None
        for rel in keys:
            if start is not None and rel <= start:
                continue
            path = self.root / rel
            if path.exists():
                yield self._info(path)

    def list_page(self, prefix: str = "", start_after: str | None = None, max_keys: int = 1000) -> tuple[list[ObjectInfo], bool]:
        items: list[ObjectInfo] = []
        for info in self.list(prefix, start_after):
            if len(items) == max_keys:
                return items, True
            items.append(info)
        return items, False

    def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)
        if is_folder_key(key):
            if not path.is_dir():
                return None
            return ObjectInfo(key=key, size=0, etag="folder", last_modified=datetime.fromtimestamp(path.stat().st_mtime, tz=UTC))
        return self._info(path) if path.is_file() else None

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path(key).open("rb")
        except OSError as exc:
            raise StoreError(f"{self.config.name}: cannot read {key!r}: {exc}") from exc

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as handle:
            return handle.read()

    def _atomic_write(self, key: str, write: callable) -> None:  # type: ignore[valid-type]
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _make_folder(self, key: str, content: bytes) -> None:
        if content:
            raise StoreError(f"{self.config.name}: key {key!r} ends in '/' but has content: a folder cannot hold it")
        self.path(key).mkdir(parents=True, exist_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        if is_folder_key(key):
            return self._make_folder(key, data)
        self._atomic_write(key, lambda handle: handle.write(data))

    def upload_fileobj(self, key: str, fileobj: BinaryIO, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        if is_folder_key(key):
            return self._make_folder(key, fileobj.read(1))
        self._atomic_write(key, lambda handle: shutil.copyfileobj(fileobj, handle, 1024 * 1024))

    def delete(self, key: str) -> None:
        path = self.path(key)
        if is_folder_key(key):
            try:
                path.rmdir()
            except OSError:
                pass  # gone already, or other objects still live in the folder: it stays
        else:
            path.unlink(missing_ok=True)
        # drop folders the delete left empty, up to the root
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
