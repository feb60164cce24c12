"""Demo data for `sync`: a source bucket with ~20 sample objects (odd keys included), mirrored to a bucket,
a folder and (when the records package is present) a JSON Lines records destination.

The sensor runs every 30 s; put, overwrite or delete objects in `sync-source` and watch the changes asset.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

SAMPLE_KEYS = [
    "reports/2024/q1.csv",
    "reports/2024/q2.csv",
    "reports/2024/q3.csv",
    "reports/2024/q4.csv",
    "images/cat.jpg",
    "images/dog.png",
    "images/with space.png",
    "images/plus+sign.png",
    "images/per%cent.png",
    "docs/ünïcødé.txt",
    "docs/日本語.txt",
    "docs//double-slash.txt",
    "docs/readme.md",
    "data/a.json",
    "data/b.json",
    "data/c.json",
    "logs/app-1.log",
    "logs/app-2.log",
    "logs/app-3.log",
    "top-level.txt",
]

CONTENT_TYPES = {".csv": "text/csv", ".jpg": "image/jpeg", ".png": "image/png", ".json": "application/json", ".md": "text/markdown"}


def _content_type(key: str) -> str:
    for suffix, kind in CONTENT_TYPES.items():
        if key.endswith(suffix):
            return kind
    return "text/plain"


def seed(ctx: Any) -> dict[str, list[dict[str, Any]]]:
    source = ctx.s3_source("sync-source", "sync-source", "")
    for key in SAMPLE_KEYS:
        body = json.dumps({"key": key, "sample": True}).encode() if key.endswith(".json") else f"sample object {key}\n".encode()
        ctx.s3.put_object(Bucket="sync-source", Key=key, Body=body, ContentType=_content_type(key), Metadata={"origin": "demo"})
    mirror = ctx.s3_source("sync-mirror", "sync-mirror", "mirror/", metafilesPrefix="meta/", deletes=True)
    folder = {"name": "sync-folder", "type": "filesystem", "path": str(ctx.workdir / "sync-folder"), "deletes": True}
    destinations = [mirror, folder]
    if importlib.util.find_spec("ingest_pipelines.records") is not None:
        destinations.append(
            {**ctx.s3_source("sync-records", "sync-records", "records/"), "type": "s3-records", "format": "json", "bufferSize": 100}
        )
    workflow = {
        "name": "demo-sync",
        "kind": "sync",
        "source": "sync-source",
        "destinations": [d["name"] for d in destinations],
        "batchSize": 8,
        "interval": "30s",
        "sensor": "running",
        "settleDelay": "2s",
        "shards": ["reports/", "images/", "docs/", "data/", "logs/"],
    }
    return {"sources": [source], "destinations": destinations, "workflows": [workflow]}
