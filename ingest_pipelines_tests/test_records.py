"""Record destinations: JSON Lines and Parquet files on the moto S3 server and in a folder, read back
independently (orjson, pyarrow) and compared field by field; file splitting, re-writes, config."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.records import (
    ChangeRecord,
    FilesystemRecordsConfig,
    RecordFileError,
    S3RecordsConfig,
    is_records_destination,
    read_records,
    write_records,
)
from ingest_pipelines.storage import open_store
from ingest_pipelines.storage.filesystem import FilesystemStore
from ingest_pipelines.storage.s3 import S3Store

RECORDS = [
    ChangeRecord("snapshot", "dir/a.txt_s1634049397", "dir/a.txt", {"content-type": "text/plain"}, b"hello\n"),
    # not valid UTF-8: survives only if the payload is carried as bytes
    ChangeRecord(
        "create", "bin/blob_c1634049398", "bin/blob", {"content-type": "application/octet-stream"}, bytes(range(256)) + b"\xff\xfe\x00"
    ),
    ChangeRecord(
        "update",
        "données/ünï 𝄞.txt_c1634049399",
        "données/ünï 𝄞.txt",
        {"content-type": "text/plain; charset=utf-8", "owner": "zoë", "x-empty": ""},
        "grüße 𝄞".encode(),
    ),
    ChangeRecord("delete", "dir/a.txt_c1634049400", "dir/a.txt", {}, b""),
    ChangeRecord("create", "empty_c1634049401", "empty", {"content-type": "binary/octet-stream"}, b""),
]


@pytest.fixture
def s3_records(s3, s3_server) -> S3Store:
    s3.create_bucket(Bucket="records")
    config = S3RecordsConfig(name="rec", bucket="records", prefix="out/", endpoint=s3_server.endpoint_url, format="json")
    return open_store(config)


@pytest.fixture
def fs_records(tmp_path: Path) -> FilesystemStore:
    return open_store(FilesystemRecordsConfig(name="rec", path=str(tmp_path / "records"), prefix="out/", format="json"))


def raw_files(store: S3Store | FilesystemStore) -> dict[str, bytes]:
    """Every file under the store's root, read without the store (boto3 / the file system)."""
    if isinstance(store, S3Store):
        listing = store.client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
        return {item["Key"]: store.client.get_object(Bucket=store.bucket, Key=item["Key"])["Body"].read() for item in listing}
    return {path.relative_to(store.root).as_posix(): path.read_bytes() for path in sorted(store.root.rglob("*")) if path.is_file()}


def parse_json_lines(data: bytes) -> list[dict]:
    return [orjson.loads(line) for line in data.splitlines()]


def parse_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def assert_json_matches(lines: list[dict], records: list[ChangeRecord]) -> None:
    assert len(lines) == len(records)
    for line, record in zip(lines, records, strict=True):
        assert list(line) == ["Operation", "Position", "Payload", "Key", "Metadata"]
        assert line["Operation"] == record.operation
        assert line["Position"] == record.position
        assert base64.b64decode(line["Payload"], validate=True) == record.payload
        assert line["Key"] == record.key
        assert line["Metadata"] == record.metadata


def assert_parquet_matches(table: pa.Table, records: list[ChangeRecord]) -> None:
    assert table.schema.names == ["operation", "position", "payload", "key", "metadata"]
    assert table.schema.field("payload").type == pa.binary()
    assert table.schema.field("metadata").type == pa.map_(pa.string(), pa.string())
    assert table.schema.field("operation").type == pa.string()
    rows = table.to_pylist()
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["operation"] == record.operation
        assert row["position"] == record.position
        assert row["payload"] == record.payload
        assert row["key"] == record.key
        assert dict(row["metadata"]) == record.metadata


@pytest.mark.parametrize("store_name", ["s3_records", "fs_records"])
@pytest.mark.parametrize("format", ["json", "parquet"])
def test_files_read_back_field_by_field(request, store_name: str, format: str) -> None:
    store = request.getfixturevalue(store_name)
    ext = ".jsonl" if format == "json" else ".parquet"
    keys = write_records(store, "wf/changes/b-0001", iter(RECORDS), format, buffer_size=2)

    assert keys == [f"wf/changes/b-0001-{i:05d}{ext}" for i in range(3)]  # 5 records, 2 per file
    files = raw_files(store)
    assert sorted(files) == [f"out/{key}" for key in keys]
    for index, key in enumerate(keys):
        expected = RECORDS[index * 2 : index * 2 + 2]
        data = files[f"out/{key}"]
        if format == "json":
            assert_json_matches(parse_json_lines(data), expected)
        else:
            assert_parquet_matches(parse_parquet(data), expected)
        assert read_records(store, key) == expected


@pytest.mark.parametrize("format", ["json", "parquet"])
def test_s3_content_type(s3_records, format: str) -> None:
    [key] = write_records(s3_records, "b", RECORDS, format, buffer_size=1000)
    head = s3_records.client.head_object(Bucket="records", Key=f"out/{key}")
    assert head["ContentType"] == {"json": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}[format]


@pytest.mark.parametrize("store_name", ["s3_records", "fs_records"])
def test_rewriting_a_batch_overwrites_and_never_duplicates(request, store_name: str) -> None:
    store = request.getfixturevalue(store_name)
    first = write_records(store, "batch-7", RECORDS, "json", buffer_size=2)
    before = raw_files(store)
    assert write_records(store, "batch-7", RECORDS, "json", buffer_size=2) == first
    assert raw_files(store) == before

    # bufferSize raised between runs: fewer files, and the third old file must not survive as a duplicate
    second = write_records(store, "batch-7", RECORDS, "json", buffer_size=4)
    assert len(second) == 2
    files = raw_files(store)
    assert sorted(files) == [f"out/{key}" for key in second]
    assert [record for key in second for record in read_records(store, key)] == RECORDS

    # format switched: the JSON files of the batch are replaced by the Parquet file
    third = write_records(store, "batch-7", RECORDS, "parquet", buffer_size=1000)
    assert sorted(raw_files(store)) == [f"out/{key}" for key in third] == ["out/batch-7-00000.parquet"]


def test_other_batches_are_left_alone(fs_records) -> None:
    write_records(fs_records, "b1", RECORDS, "json", buffer_size=1)
    write_records(fs_records, "b10", RECORDS[:1], "json", buffer_size=1)
    write_records(fs_records, "b1", RECORDS[:2], "json", buffer_size=1)
    assert sorted(raw_files(fs_records)) == ["out/b1-00000.jsonl", "out/b1-00001.jsonl", "out/b10-00000.jsonl"]


def test_records_are_consumed_one_file_at_a_time(fs_records) -> None:
    """A failure while producing records leaves the files already written whole; a re-run completes the batch."""
    consumed: list[int] = []

    def produce(fail_at: int | None) -> Iterator[ChangeRecord]:
        for index, record in enumerate(RECORDS):
            if index == fail_at:
                raise RuntimeError("source went away")
            consumed.append(len(raw_files(fs_records)))
            yield record

    with pytest.raises(RuntimeError, match="source went away"):
        write_records(fs_records, "b", produce(fail_at=4), "parquet", buffer_size=2)
    # when record 3 was produced, the first file was already written: only one file's records were held
    assert consumed == [0, 0, 1, 1]
    assert sorted(raw_files(fs_records)) == ["out/b-00000.parquet", "out/b-00001.parquet"]
    keys = write_records(fs_records, "b", produce(fail_at=None), "parquet", buffer_size=2)
    assert [record for key in keys for record in read_records(fs_records, key)] == RECORDS


def test_no_records_write_no_files(fs_records) -> None:
    assert write_records(fs_records, "b", [], "json", buffer_size=10) == []
    assert raw_files(fs_records) == {}


def test_bad_arguments() -> None:
    store = object()
    with pytest.raises(ValueError, match="unknown record format 'csv'"):
        write_records(store, "b", RECORDS, "csv", 10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_size must be at least 1"):
        write_records(store, "b", RECORDS, "json", 0)  # type: ignore[arg-type]


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="k: unknown operation 'insert'"):
        ChangeRecord("insert", "k_c1", "k", {}, b"x")
    with pytest.raises(ValueError, match="k: a delete record has no payload"):
        ChangeRecord("delete", "k_c1", "k", {}, b"x")


def test_unreadable_files_name_the_file_and_the_problem(fs_records) -> None:
    fs_records.put_bytes("bad-00000.jsonl", b'{"Operation": "create"}\n')
    with pytest.raises(RecordFileError, match=r"bad-00000.jsonl: line 1: expected keys Operation, Position"):
        read_records(fs_records, "bad-00000.jsonl")
    good = encode_line(RECORDS[0])
    fs_records.put_bytes("bad-00001.jsonl", good + b"not json\n")
    with pytest.raises(RecordFileError, match=r"bad-00001.jsonl: line 2:"):
        read_records(fs_records, "bad-00001.jsonl")
    fs_records.put_bytes("bad-00002.jsonl", good.replace(b'"Payload":"', b'"Payload":"!'))
    with pytest.raises(RecordFileError, match=r"bad-00002.jsonl: line 1:"):
        read_records(fs_records, "bad-00002.jsonl")
    fs_records.put_bytes("bad-00000.parquet", b"PAR1 nope")
    with pytest.raises(RecordFileError, match=r"bad-00000.parquet: not a Parquet file"):
        read_records(fs_records, "bad-00000.parquet")
    with pytest.raises(RecordFileError, match="not a record file name"):
        read_records(fs_records, "notes.txt")


def encode_line(record: ChangeRecord) -> bytes:
    fields = {"Operation": record.operation, "Position": record.position, "Payload": base64.b64encode(record.payload).decode()}
    return orjson.dumps({**fields, "Key": record.key, "Metadata": record.metadata}) + b"\n"


# --------------------------------------------------------------------------- config


def records_doc(tmp_path: Path, **extra: object) -> dict:
    return {
        "sources": [{"name": "src", "type": "s3", "bucket": "source", "endpoint": "http://127.0.0.1:9"}],
        "destinations": [
            {"name": "s3rec", "type": "s3-records", "bucket": "records", "prefix": "cdc/", "format": "parquet", **extra},
            {"name": "fsrec", "type": "filesystem-records", "path": str(tmp_path / "out"), "format": "json", "bufferSize": 50},
        ],
        "workflows": [{"name": "src-to-records", "source": "src", "destinations": ["s3rec", "fsrec"]}],
    }


def test_both_types_load_through_load_config(write_config, tmp_path: Path) -> None:
    config = load_config(write_config(records_doc(tmp_path)))
    s3rec, fsrec = config.destination("s3rec"), config.destination("fsrec")
    assert isinstance(s3rec, S3RecordsConfig) and isinstance(fsrec, FilesystemRecordsConfig)
    assert (s3rec.format, s3rec.bufferSize, s3rec.deletes) == ("parquet", 1000, True)
    assert (fsrec.format, fsrec.bufferSize) == ("json", 50)
    assert is_records_destination(s3rec) and is_records_destination(fsrec)
    assert not is_records_destination(config.source("src"))
    assert isinstance(open_store(s3rec), S3Store) and isinstance(open_store(fsrec), FilesystemStore)
    assert config.workflow("src-to-records").destinations == ["s3rec", "fsrec"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": None}, r"destinations\[0\] \(s3rec\): field 'format': Field required"),
        ({"format": "csv"}, r"destinations\[0\] \(s3rec\): field 'format': Input should be 'json' or 'parquet'"),
        ({"bufferSize": 0}, r"destinations\[0\] \(s3rec\): field 'bufferSize': Input should be greater than or equal to 1"),
        ({"metafilesPrefix": "meta/"}, r"destinations\[0\] \(s3rec\): field 'metafilesPrefix': Value error, not used by record"),
    ],
)
def test_config_errors_name_the_destination_and_field(write_config, tmp_path: Path, change: dict, message: str) -> None:
    doc = records_doc(tmp_path, **change)
    doc["destinations"][0] = {k: v for k, v in doc["destinations"][0].items() if v is not None}
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(doc))


def test_record_types_are_not_sources(write_config, tmp_path: Path) -> None:
    doc = records_doc(tmp_path)
    doc["sources"] = [{"name": "src", "type": "s3-records", "bucket": "b", "format": "json"}]
    with pytest.raises(ConfigError, match=r"sources\[0\] \(src\): field 'type': unknown type 's3-records'"):
        load_config(write_config(doc))
