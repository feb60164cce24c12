"""The destinations of a sync workflow as the applier sees them: what each takes (change records or object
copies), what it may do (deletes, connylabs markers) and how to see what it already holds.

Capabilities come from typed config fields (`deletes`, `metafilesPrefix` on every store config; records by type).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig, StoreConfig
from ingest_pipelines.records import is_records_destination
from ingest_pipelines.storage import ObjectStore


@dataclass
class Destination:
    """A destination of the workflow: its name in ingest.yaml, its config and its open store."""

    name: str
    config: StoreConfig
    store: ObjectStore

    @property
    def records(self) -> bool:
        """Takes change records (s3-records, filesystem-records) rather than copies of the objects."""
        return is_records_destination(self.config)

    @property
    def deletes(self) -> bool:
        return self.config.deletes

    @property
    def markers(self) -> str | None:
        return self.config.metafilesPrefix or None

    @property
    def is_bucket(self) -> bool:
        return isinstance(self.config, S3StoreConfig)

    @property
    def is_folder(self) -> bool:
        return isinstance(self.config, FilesystemStoreConfig)

    def full_key(self, key: str) -> str:
        """The key in the bucket (with the destination's prefix)."""
        store: Any = self.store
        return store.full_key(key) if hasattr(store, "full_key") else key

    # ------------------------------------------------------------------ connylabs markers

    def marker_key(self, key: str) -> str:
        """The connylabs marker `{metafilesPrefix}{name}.done`, relative to the bucket/folder root."""
        return f"{self.markers}{key}.done"

    def marker_exists(self, key: str) -> bool:
        marker = self.marker_key(key)
        store: Any = self.store
        if self.is_bucket:
            try:
                store.client.head_object(Bucket=store.bucket, Key=marker)
                return True
            except ClientError as exc:
                if client_error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return (store.root / marker).is_file()

    def put_marker(self, key: str) -> None:
        marker = self.marker_key(key)
        store: Any = self.store
        if self.is_bucket:
            store.client.put_object(Bucket=store.bucket, Key=marker, Body=b"")
            return
        path = store.root / marker
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def delete_marker(self, key: str) -> None:
        marker = self.marker_key(key)
        store: Any = self.store
        if self.is_bucket:
            store.client.delete_object(Bucket=store.bucket, Key=marker)
        else:
            (store.root / marker).unlink(missing_ok=True)


def client_error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def range_listing(store: Any, full_keys: list[str]) -> dict[str, dict[str, Any]] | None:
    """Bucket listing entries for the range [min(full_keys), max(full_keys)], or None when the range
    holds far more keys than asked for (then a HEAD per key is cheaper)."""
    if not full_keys:
        return {}
    first, last = min(full_keys), max(full_keys)
    common = os.path.commonprefix([first, last])
    budget = 2 * len(full_keys) + 1000
    found: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": common, "StartAfter": first[:-1]}
    wanted = set(full_keys)
    seen = 0
    while True:
        page = store.client.list_objects_v2(**kwargs)
        contents = page.get("Contents", [])
        for item in contents:
            if item["Key"] > last:
                return found
            if item["Key"] in wanted:
                found[item["Key"]] = item
        seen += len(contents)
        if not page.get("IsTruncated") or not contents:
            return found
        if seen > budget:
            return None
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
        kwargs.pop("StartAfter", None)


def etags_comparable(first: str, second: str) -> bool:
    """Whether two ETags of one content must be equal: only two single-part ETags (the content's MD5)
    are; a multipart ETag (`md5-N`) depends on how the object was uploaded."""
    return bool(first) and bool(second) and "-" not in first and "-" not in second
