"""The test harness itself: the moto server resets between tests; the HTTP server records requests."""

from __future__ import annotations

import json
import urllib.request

from ingest_pipelines.testing.http_server import Response


def test_moto_server_is_empty_per_test(s3) -> None:
    assert s3.list_buckets()["Buckets"] == []
    s3.create_bucket(Bucket="leftover")


def test_moto_server_was_reset(s3) -> None:
    assert s3.list_buckets()["Buckets"] == []


def test_http_server_records_and_answers(http_server) -> None:
    server = http_server(lambda request: Response(201, {"echo": request.json()["x"], "path": request.path}))
    req = urllib.request.Request(
        f"{server.url}/hook?a=1", data=json.dumps({"x": 5}).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.status == 201
        assert json.loads(resp.read()) == {"echo": 5, "path": "/hook"}
    assert server.requests[0].method == "POST" and server.requests[0].query == {"a": ["1"]}
