"""Demo data for `inventory` workflows: an image bucket with tagged faces, today's S3 Inventory report
(gzip CSV, real layout) in an inventory bucket, and the fake indexing gateway on loopback."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest_pipelines.demo import DemoContext
from ingest_pipelines.testing.gateway import GatewayServer
from ingest_pipelines.testing.inventory_report import rows_from_bucket, write_inventory_report

IMAGES_BUCKET = "demo-faces"
INVENTORY_BUCKET = "demo-inventory"
INVENTORY_PREFIX = "inventory/"
#: a 1x1 PNG: enough for the gateway fake, which only checks the base64
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")

#: key -> tags; shows every rule: indexed, Properties, Ignore, no UserId, already Indexed, not an image
FACES: dict[str, dict[str, str]] = {
    "faces/alice.png": {"UserId": "alice", "Properties": f"s3://{IMAGES_BUCKET}/properties/alice.json", "team": "blue"},
    "faces/bob.JPG": {"userid": "bob"},
    "faces/carol.jpeg": {"UserId": "carol", "Ignore": "true"},
    "faces/dave.gif": {"UserId": "dave"},
    "faces/eve.png": {"team": "red"},
    "faces/frank.png": {"UserId": "frank", "Indexed": "TRUE"},
    "faces/grace hopper.png": {"UserId": "grace"},
}


def seed(ctx: DemoContext) -> dict[str, Any]:
    source = ctx.s3_source("inventory-reports", INVENTORY_BUCKET, prefix=INVENTORY_PREFIX)
    ctx.s3_source("demo-faces", IMAGES_BUCKET)  # creates the image bucket; the workflow reads it through the report
    ctx.s3.put_object(Bucket=IMAGES_BUCKET, Key="properties/alice.json", Body=json.dumps({"fname": "Alice", "lname": "Liddell"}).encode())
    for key, tags in FACES.items():
        ctx.s3.put_object(Bucket=IMAGES_BUCKET, Key=key, Body=PNG, ContentType="image/png")
        ctx.s3.put_object_tagging(Bucket=IMAGES_BUCKET, Key=key, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]})
    today = datetime.now(UTC)
    rows = [row for row in rows_from_bucket(ctx.s3, IMAGES_BUCKET) if not row["key"].startswith("properties/")]
    write_inventory_report(
        ctx.s3, INVENTORY_BUCKET, IMAGES_BUCKET, rows, prefix=INVENTORY_PREFIX, timestamp=today.strftime("%Y-%m-%dT00-00Z")
    )

    gateway = GatewayServer().start()
    ctx.servers.append(gateway)
    # bob's first call is throttled: the run shows the Retry-After handling
    gateway.script([(429, {"Retry-After": "1"})], user_id="bob")
    workflow = {
        "name": "faces-index",
        "kind": "inventory",
        "source": source["name"],
        "gateway": {"url": gateway.url, "ratePerSecond": 5},
        "batchManifestPrefix": "batch-operations/",
        "startDate": (today - timedelta(days=7)).date().isoformat(),
        "sensor": "running",
        "interval": "30s",
    }
    return {"sources": [source], "destinations": [], "workflows": [workflow]}
