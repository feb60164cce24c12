"""S3 Batch Operations files: the `S3BatchOperations_CSV_20180820` manifest of qualifying objects and
a `Report_CSV_20180820`-shaped results report (bucket, key, versionId, taskStatus, errorCode, resultMessage)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote_plus

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: characters that stay as they are in an encoded key (the rest go through quote_plus).
_PLAIN_KEY = r"^[A-Za-z0-9_.\-~/]*$"


def encode_keys(keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """URL-encode keys as S3 Inventory and Batch Operations expect (quote_plus, `/` kept); keys made
    only of unreserved characters skip Python."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    keys = pc.fill_null(keys, "")
    needs = pc.invert(pc.match_substring_regex(keys, _PLAIN_KEY))
    if not pc.any(needs).as_py():
        return keys
    encoded = [quote_plus(key, safe="/") for key in pc.filter(keys, needs).to_pylist()]
    return pc.replace_with_mask(keys, needs, pa.array(encoded, pa.string()))


def encode_key(key: str) -> str:
    return quote_plus(key, safe="/")


def write_batch_manifest(bucket: str, keys: pa.Array | pa.ChunkedArray, version_ids: pa.Array | pa.ChunkedArray, target: Path) -> int:
    """Write `bucket,key[,versionId]` lines (no header, unquoted: encoded keys hold no commas or quotes)."""
    versioned = bool(len(version_ids)) and pc.any(pc.is_valid(version_ids)).as_py()
    table = pa.table({"key": keys, "version_id": version_ids})
    return write_batch_manifest_batches(bucket, table.to_batches(), versioned, target)


def write_batch_manifest_batches(bucket: str, batches: Iterable[pa.RecordBatch | pa.Table], versioned: bool, target: Path) -> int:
    """The same from batches with `key` and `version_id` columns, one batch in memory at a time;
    `versioned` (some object has a versionId) decides the column count for the whole file."""
    names = ["bucket", "key", "versionId"] if versioned else ["bucket", "key"]
    schema = pa.schema([(name, pa.string()) for name in names])
    rows = 0
    with target.open("wb") as handle:
        writer = pacsv.CSVWriter(handle, schema, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
        for batch in batches:
            if not batch.num_rows:
                continue
            columns = [pa.repeat(pa.scalar(bucket, pa.string()), batch.num_rows), encode_keys(batch.column("key"))]
            if versioned:
                columns.append(pc.fill_null(batch.column("version_id"), ""))
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            rows += batch.num_rows
        writer.close()
    return rows


RESULT_COLUMNS = ("bucket", "key", "versionId", "taskStatus", "errorCode", "resultMessage")


def results_csv(rows: Iterable[tuple[str, str, str | None, str, str, str]]) -> bytes:
    """Report_CSV_20180820 shape, no header: taskStatus is succeeded or failed; keys URL-encoded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for bucket, key, version_id, status, error_code, message in rows:
        writer.writerow([bucket, encode_key(key), version_id or "", status, error_code, message])
    return buffer.getvalue().encode()
