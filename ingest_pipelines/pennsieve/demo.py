"""Demo data for `pennsieve` workflows: the Pennsieve API test server, an upload bucket and two folders to import.

The sensor imports each folder of s3://pennsieve-input/incoming/ into the fake Pennsieve as soon as the demo starts.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ingest_pipelines.demo import DemoContext
from ingest_pipelines.testing.pennsieve import PennsieveTestServer, run_with_packages

RUN_ID = "demo-run-0001"
DATASET = "N:dataset:demo"
PACKAGE = "N:package:demo-umap"
TOKEN_VARIABLE = "PENNSIEVE_CALLBACK_TOKEN"
UPLOAD_BUCKET = "pennsieve-uploads"
INPUT_BUCKET = "pennsieve-input"


def _umap_parquet(points: int, seed: int) -> bytes:
    xs = [((i * 7919 + seed) % 1000) / 100 for i in range(points)]
    ys = [((i * 104729 + seed) % 1000) / 100 for i in range(points)]
    table = pa.table({"x": xs, "y": ys, "label": [f"cell-{i % 5}" for i in range(points)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def seed(ctx: DemoContext) -> dict[str, Any]:
    token = "demo-callback-token"
    api = PennsieveTestServer(
        tokens={RUN_ID: token},
        bucket=UPLOAD_BUCKET,
        runs={RUN_ID: run_with_packages(RUN_ID, DATASET, [PACKAGE])},
    ).start()
    ctx.servers.append(api)
    ctx.env[TOKEN_VARIABLE] = token
    ctx.s3.create_bucket(Bucket=UPLOAD_BUCKET)
    source = ctx.s3_source("pennsieve_input", INPUT_BUCKET, prefix="incoming/")
    for n, folder in enumerate(["umap-0001", "umap-0002"]):
        ctx.s3.put_object(Bucket=INPUT_BUCKET, Key=f"incoming/{folder}/embedding.parquet", Body=_umap_parquet(500, n))
        ctx.s3.put_object(Bucket=INPUT_BUCKET, Key=f"incoming/{folder}/clusters/labels.parquet", Body=_umap_parquet(50, n + 10))
        ctx.s3.put_object(
            Bucket=INPUT_BUCKET,
            Key=f"incoming/{folder}/properties.json",
            Body=json.dumps({"title": f"UMAP {folder}", "dimensions": 2}).encode(),
        )
    workflow = {
        "name": "pennsieve-umap",
        "kind": "pennsieve",
        "source": "pennsieve_input",
        "apiHost": api.url,
        "datasetId": DATASET,
        "packageId": "default",
        "executionRunId": RUN_ID,
        "callbackToken": f"${TOKEN_VARIABLE}",
        "propertiesFile": "properties.json",
        "settleDelay": "5s",
        "interval": "30s",
        "sensor": "running",
    }
    return {"sources": [source], "destinations": [], "workflows": [workflow]}
