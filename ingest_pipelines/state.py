"""Durable workflow state as JSON documents in an object store (a bucket prefix or a local folder).

Writes are whole-document and atomic (S3 PUT, or temp file + rename), so a crash never leaves half a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from ingest_pipelines.config import IngestConfig, StoreConfig
from ingest_pipelines.storage import ObjectStore, open_store


class StateStore:
    """JSON documents under `{workflow}/...` keys; nothing here knows what the documents mean."""

    def __init__(self, store: ObjectStore):
        self.store = store

    @classmethod
    def for_config(cls, config: IngestConfig, **kwargs: Any) -> StateStore:
        return cls(open_store(config.state_store(), **kwargs))

    @classmethod
    def for_store_config(cls, config: StoreConfig, **kwargs: Any) -> StateStore:
        return cls(open_store(config, **kwargs))

    def put_json(self, key: str, document: Any) -> None:
        self.store.put_bytes(key, orjson.dumps(document, option=orjson.OPT_SORT_KEYS), content_type="application/json")

    def get_json(self, key: str) -> Any | None:
        if self.store.head(key) is None:
            return None
        return orjson.loads(self.store.get_bytes(key))

    def exists(self, key: str) -> bool:
        return self.store.head(key) is not None

    def keys(self, prefix: str = "") -> Iterator[str]:
        for info in self.store.list(prefix):
            yield info.key

    def delete(self, key: str) -> None:
        self.store.delete(key)
