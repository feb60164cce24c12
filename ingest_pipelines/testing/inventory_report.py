"""Write S3 Inventory reports in the real layout (gzip CSV, Parquet, ORC) for tests, the demo and benchmarks:
`{prefix}{source-bucket}/{config-id}/{YYYY-MM-DDTHH-MMZ}/manifest.json` + `manifest.checksum` + `data/` files."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.orc as paorc
import pyarrow.parquet as pq

CSV_SCHEMA = ["Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag", "StorageClass"]
COLUMNAR_FIELDS = ["bucket", "key", "version_id", "is_latest", "is_delete_marker", "size", "last_modified_date", "e_tag", "storage_class"]
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); optional binary version_id (UTF8); "
    "optional boolean is_latest; optional boolean is_delete_marker; optional int64 size; "
    "optional int64 last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); optional binary storage_class (UTF8);}"
)
ORC_SCHEMA = (
    "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,size:bigint,"
    "last_modified_date:timestamp,e_tag:string,storage_class:string>"
)


def rows_from_bucket(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
    """Inventory rows for the current objects of a bucket (what S3 Inventory would list)."""
    rows = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            rows.append({"key": item["Key"], "size": item["Size"], "etag": item["ETag"].strip('"'), "last_modified": item["LastModified"]})
    return rows


def _table(bucket: str, rows: Sequence[dict[str, Any]]) -> pa.Table:
    def when(value: Any) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else datetime(2024, 1, 1, tzinfo=UTC)

    return pa.table(
        {
            "bucket": pa.array([bucket] * len(rows), pa.string()),
            "key": pa.array([row["key"] for row in rows], pa.string()),
            "version_id": pa.array([row.get("version_id") for row in rows], pa.string()),
            "is_latest": pa.array([row.get("is_latest", True) for row in rows], pa.bool_()),
            "is_delete_marker": pa.array([row.get("is_delete_marker", False) for row in rows], pa.bool_()),
            "size": pa.array([row.get("size", 0) for row in rows], pa.int64()),
            "last_modified_date": pa.array([when(row.get("last_modified")) for row in rows], pa.timestamp("ms", tz="UTC")),
            "e_tag": pa.array([row.get("etag", "") for row in rows], pa.string()),
            "storage_class": pa.array(["STANDARD"] * len(rows), pa.string()),
        }
    )


def csv_gzip_bytes(table: pa.Table) -> bytes:
    """S3 Inventory CSV: no header, every field quoted, keys URL-encoded, gzip."""
    keys = [quote_plus(key, safe="/") for key in table.column("key").to_pylist()]
    stamps = [stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z") if stamp else "" for stamp in table.column("last_modified_date").to_pylist()]
    text_table = pa.table(
        {
            "Bucket": table.column("bucket"),
            "Key": pa.array(keys, pa.string()),
            "VersionId": table.column("version_id").fill_null(""),
            "IsLatest": pa.array(["true" if v else "false" for v in table.column("is_latest").to_pylist()]),
            "IsDeleteMarker": pa.array(["true" if v else "false" for v in table.column("is_delete_marker").to_pylist()]),
            "Size": table.column("size").cast(pa.string()),
            "LastModifiedDate": pa.array(stamps, pa.string()),
            "ETag": table.column("e_tag"),
            "StorageClass": table.column("storage_class"),
        }
    )
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "gzip") as stream:
        pacsv.write_csv(text_table, stream, write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    return sink.getvalue().to_pybytes()


def data_file_bytes(table: pa.Table, file_format: str) -> bytes:
    if file_format == "CSV":
        return csv_gzip_bytes(table)
    sink = io.BytesIO()
    if file_format == "Parquet":
        pq.write_table(table, sink)
    else:
        paorc.write_table(table, sink)
    return sink.getvalue()


def write_inventory_report(
    s3: Any,
    inventory_bucket: str,
    source_bucket: str,
    rows: Sequence[dict[str, Any]],
    *,
    prefix: str = "",
    config_id: str = "daily",
    timestamp: str = "2024-05-01T01-00Z",
    file_format: str = "CSV",
    files: int = 1,
    checksum: bool = True,
    corrupt_file: int | None = None,
) -> str:
    """Put data files, manifest.json and (unless `checksum=False`) manifest.checksum; returns the manifest
    key. `corrupt_file=i` makes data file i disagree with its MD5checksum."""
    base = f"{prefix}{source_bucket}/{config_id}/"
    extension = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[file_format]
    table = _table(source_bucket, rows)
    per_file = max(1, -(-len(rows) // files)) if rows else 1
    entries = []
    for index in range(files):
        data = data_file_bytes(table.slice(index * per_file, per_file), file_format)
        key = f"{base}data/{uuid.uuid4()}.{extension}"
        md5 = hashlib.md5(data).hexdigest()
        if corrupt_file == index:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        s3.put_object(Bucket=inventory_bucket, Key=key, Body=data)
        entries.append({"key": key, "size": len(data), "MD5checksum": md5})
    schema = {"CSV": ", ".join(CSV_SCHEMA), "Parquet": PARQUET_SCHEMA, "ORC": ORC_SCHEMA}[file_format]
    manifest = {
        "sourceBucket": source_bucket,
        "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": str(int(datetime.strptime(timestamp, "%Y-%m-%dT%H-%MZ").replace(tzinfo=UTC).timestamp() * 1000)),
        "fileFormat": file_format,
        "fileSchema": schema,
        "files": entries,
    }
    body = json.dumps(manifest, indent=2).encode()
    folder = f"{base}{timestamp}/"
    s3.put_object(Bucket=inventory_bucket, Key=folder + "manifest.json", Body=body)
    if checksum:
        s3.put_object(Bucket=inventory_bucket, Key=folder + "manifest.checksum", Body=hashlib.md5(body).hexdigest().encode() + b"\n")
    return folder + "manifest.json"
