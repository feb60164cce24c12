"""Fixtures for the inventory tests: an image bucket with tags, reports in the real S3 Inventory layout,
the fake gateway, and an importer whose S3 client counts tag calls (botocore event hooks, no patching)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.inventory.config import InventoryWorkflow
from ingest_pipelines.inventory.gateway import GatewayClient
from ingest_pipelines.inventory.history import ImportHistory
from ingest_pipelines.inventory.importer import InventoryImport
from ingest_pipelines.inventory.manifest import ReportRef, parse_report_key
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import open_store
from ingest_pipelines.storage.s3 import S3Store
from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.gateway import GatewayServer
from ingest_pipelines.testing.inventory_report import rows_from_bucket, write_inventory_report

IMAGES = "images"
INVENTORY = "inventory"
PREFIX = "inv/"
#: fast retries so failure tests take milliseconds
FAST_GATEWAY = {"ratePerSecond": 500, "backoff": "10ms", "maxBackoff": "50ms", "concurrency": 4}


@pytest.fixture
def gateway() -> Iterator[GatewayServer]:
    with GatewayServer() as server:
        yield server


@dataclass
class InventoryScene:
    s3: Any
    server: MotoServer
    gateway: GatewayServer
    tmp_path: Path
    #: S3 API calls made by importers built here: operation -> [(Bucket, Key)]
    calls: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def put_image(self, key: str, tags: dict[str, str] | None = None, body: bytes | None = None) -> None:
        self.s3.put_object(Bucket=IMAGES, Key=key, Body=body if body is not None else b"\x89PNG image " + key.encode())
        if tags:
            self.put_tags(key, tags)

    def put_tags(self, key: str, tags: dict[str, str]) -> None:
        self.s3.put_object_tagging(Bucket=IMAGES, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})

    def tags(self, key: str) -> dict[str, str]:
        return {tag["Key"]: tag["Value"] for tag in self.s3.get_object_tagging(Bucket=IMAGES, Key=key)["TagSet"]}

    def put_properties(self, key: str, content: Any) -> str:
        body = content if isinstance(content, bytes) else json.dumps(content).encode()
        self.s3.put_object(Bucket=IMAGES, Key=key, Body=body)
        return f"s3://{IMAGES}/{key}"

    def report(self, timestamp: str = "2024-05-01T01-00Z", rows: list[dict[str, Any]] | None = None, **options: Any) -> ReportRef:
        """A report of the image bucket's current objects (or `rows`)."""
        rows = rows if rows is not None else rows_from_bucket(self.s3, IMAGES)
        key = write_inventory_report(self.s3, INVENTORY, IMAGES, rows, prefix=PREFIX, timestamp=timestamp, **options)
        ref = parse_report_key(key, PREFIX)
        assert ref is not None
        return ref

    def workflow(self, **gateway: Any) -> InventoryWorkflow:
        return InventoryWorkflow(name="faces", source="inventory", gateway={"url": self.gateway.url, **FAST_GATEWAY, **gateway})

    def store(self) -> S3Store:
        store = open_store(S3StoreConfig(name="inventory", bucket=INVENTORY, prefix=PREFIX, endpoint=self.server.endpoint_url))
        assert isinstance(store, S3Store)
        for operation in ("GetObjectTagging", "PutObjectTagging", "GetObject"):
            store.client.meta.events.register(f"provide-client-params.s3.{operation}", self._counter(operation))
        return store

    def _counter(self, operation: str):
        def count(params: dict[str, Any], **kwargs: Any) -> None:
            self.calls.setdefault(operation, []).append((params.get("Bucket"), params.get("Key")))

        return count

    def looked_up(self) -> list[str]:
        return sorted(key for bucket, key in self.calls.get("GetObjectTagging", []) if bucket == IMAGES)

    def tagged(self) -> list[str]:
        return sorted(key for bucket, key in self.calls.get("PutObjectTagging", []) if bucket == IMAGES)

    def history(self) -> ImportHistory:
        return ImportHistory(f"sqlite:///{self.tmp_path / 'history.sqlite'}", "faces")

    def state(self) -> StateStore:
        return StateStore(open_store(FilesystemStoreConfig(name="state", path=str(self.tmp_path / "state"))))

    def importer(self, **gateway: Any) -> InventoryImport:
        workflow = self.workflow(**gateway)
        return InventoryImport(workflow, self.store(), self.state(), self.history(), GatewayClient(workflow.gateway))

    def config_document(self, **workflow: Any) -> dict[str, Any]:
        """An ingest.yaml with the inventory bucket as source and one inventory workflow."""
        return {
            "sources": [
                {"name": "inventory", "type": "s3", "endpoint": self.server.endpoint_url, "bucket": INVENTORY, "prefix": PREFIX.rstrip("/")}
            ],
            "workflows": [
                {
                    "name": "faces-index",
                    "kind": "inventory",
                    "source": "inventory",
                    "gateway": {"url": self.gateway.url, **FAST_GATEWAY},
                    "history": f"sqlite:///{self.tmp_path / 'history.sqlite'}",
                    **workflow,
                }
            ],
            "state": {"type": "filesystem", "path": str(self.tmp_path / "state")},
        }


@pytest.fixture
def scene(s3: Any, s3_server: MotoServer, gateway: GatewayServer, tmp_path: Path) -> InventoryScene:
    s3.create_bucket(Bucket=IMAGES)
    s3.create_bucket(Bucket=INVENTORY)
    return InventoryScene(s3=s3, server=s3_server, gateway=gateway, tmp_path=tmp_path)
