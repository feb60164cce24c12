"""Sync into records destinations (s3-records JSON Lines, filesystem-records Parquet): record files
read back with pyarrow / json and compared field by field; re-runs and backfills add no duplicates."""

from __future__ import annotations

import base64
import json

import pyarrow.parquet as pq

from ingest_pipelines.records import FilesystemRecordsConfig, S3RecordsConfig
from ingest_pipelines.sync.resync import resync_batches
from ingest_pipelines.sync.verify import records_unique
from ingest_pipelines_tests.sync_fixtures import SyncRig, put, s3_config


def test_records_json_and_parquet_field_by_field(tmp_path, s3, s3_server) -> None:
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="rec")
    s3.put_object(Bucket="src", Key="a b+c.json", Body=b'{"x": 1}', ContentType="application/json", Metadata={"team": "blue"})
    put(s3, "src", "bin/data.bin", bytes(range(256)))
    jsonl = S3RecordsConfig(name="jsonl", bucket="rec", prefix="out/", endpoint=s3_server.endpoint_url, format="json", bufferSize=1)
    parquet = FilesystemRecordsConfig(name="parq", path=str(tmp_path / "records"), format="parquet", bufferSize=10)
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [jsonl, parquet])
    rig.run_until_idle()
    assert rig.apply().failures == []
    put(s3, "src", "bin/data.bin", b"v2")
    s3.delete_object(Bucket="src", Key="a b+c.json")
    rig.run_until_idle()
    assert rig.apply(rig.emitted[1:]).failures == []
    expected = [
        (c.operation, c.position, c.key)
        for b in rig.emitted
        for c in b.changes  # batch order
    ]
    assert [(op, key) for op, _, key in expected] == [
        ("snapshot", "a b+c.json"),
        ("snapshot", "bin/data.bin"),
        ("delete", "a b+c.json"),
        ("update", "bin/data.bin"),
    ]
    payloads = {"a b+c.json": b'{"x": 1}', "bin/data.bin": bytes(range(256))}

    # JSON Lines: one file per record (bufferSize 1), Conduit's keys, payload base64
    lines = []
    for batch in rig.emitted:
        listed = s3.list_objects_v2(Bucket="rec", Prefix=f"out/{batch.id}-")["Contents"]
        assert len(listed) == len(batch.changes)
        for item in listed:
            body = s3.get_object(Bucket="rec", Key=item["Key"])["Body"].read()
            lines += [json.loads(line) for line in body.splitlines()]
    assert [(r["Operation"], r["Position"], r["Key"]) for r in lines] == expected
    first, second, deleted, updated = lines
    assert base64.b64decode(first["Payload"]) == payloads["a b+c.json"]
    assert first["Metadata"] == {"content-type": "application/json", "team": "blue"}
    assert base64.b64decode(second["Payload"]) == payloads["bin/data.bin"]
    assert deleted["Payload"] == "" and deleted["Position"].startswith("a b+c.json_c")
    assert base64.b64decode(updated["Payload"]) == b"v2"

    # Parquet: one file per batch here, read with pyarrow
    rows = []
    for batch in rig.emitted:
        files = sorted((tmp_path / "records").glob(f"{batch.id}-*.parquet"))
        assert len(files) == 1
        table = pq.read_table(files[0])
        assert table.column_names == ["operation", "position", "payload", "key", "metadata"]
        rows += table.to_pylist()
    assert [(r["operation"], r["position"], r["key"]) for r in rows] == expected
    assert rows[0]["payload"] == payloads["a b+c.json"] and dict(rows[0]["metadata"]) == {
        "content-type": "application/json",
        "team": "blue",
    }
    assert rows[2]["payload"] == b"" and rows[3]["payload"] == b"v2"

    for batch in rig.emitted:
        assert records_unique([batch], rig.destinations, rig.ledger, "wf").passed


def test_rerun_and_backfill_write_no_duplicate_records(tmp_path, s3, s3_server) -> None:
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="rec")
    for i in range(5):
        put(s3, "src", f"k{i}", f"{i}".encode())
    dest = S3RecordsConfig(name="rec", bucket="rec", endpoint=s3_server.endpoint_url, format="json", bufferSize=2)
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [dest], batchSize=3)
    rig.run_until_idle()
    rig.apply()
    files_before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="rec")["Contents"]}
    # a re-run of every batch (the ledger forgotten: a fresh ledger file) rewrites the same files
    again = SyncRig(tmp_path / "again", rig.source.config, [dest], batchSize=3)
    for batch in rig.emitted:
        again.applier.apply(batch)
    assert {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket="rec")["Contents"]} == files_before
    # a snapshot backfill adds records only for versions the destination never had
    put(s3, "src", "k9", b"new")
    written = []
    for batch in resync_batches(rig.workflow, "all", rig.source, rig.ledger, 0.0):
        written += rig.applier.apply(batch, resync=True).records_files
    records = [
        json.loads(line)
        for o in s3.list_objects_v2(Bucket="rec")["Contents"]
        for line in s3.get_object(Bucket="rec", Key=o["Key"])["Body"].read().splitlines()
    ]
    assert sorted(r["Key"] for r in records) == ["k0", "k1", "k2", "k3", "k4", "k9"]
    assert len(written) == 1


def test_a_version_gone_before_its_batch_ran_is_recorded_once_by_the_later_batch(tmp_path, s3, s3_server) -> None:
    # an unversioned source: once overwritten, the first version's bytes can no longer be read
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="rec")
    jsonl = S3RecordsConfig(name="jsonl", bucket="rec", endpoint=s3_server.endpoint_url, format="json")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [jsonl])
    rig.run_until_idle()  # the empty snapshot
    put(s3, "src", "k", b"v1")
    put(s3, "src", "gone", b"g1")
    first = rig.run_until_idle()
    put(s3, "src", "k", b"v2")  # before the first batch was applied
    s3.delete_object(Bucket="src", Key="gone")
    second = rig.run_until_idle()
    assert sorted(first) == [("create", "gone"), ("create", "k")] and sorted(second) == [("delete", "gone"), ("update", "k")]
    total = rig.apply()
    assert total.failures == [] and (total.superseded, total.source_missing) == (1, 1)
    records = []
    for item in sorted(s3.list_objects_v2(Bucket="rec")["Contents"], key=lambda i: i["Key"]):
        records += [json.loads(line) for line in s3.get_object(Bucket="rec", Key=item["Key"])["Body"].read().splitlines()]
    # v2 once (not also under the first batch's position), the delete once, nothing for the unreadable versions
    assert [(r["Operation"], r["Key"], base64.b64decode(r["Payload"])) for r in records] == [
        ("delete", "gone", b""),
        ("update", "k", b"v2"),
    ]
    for batch in rig.emitted:
        assert records_unique([batch], rig.destinations, rig.ledger, "wf").passed
