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
    columns = [pa.array([bucket] * len(keys), pa.string()), encode_keys(keys)]
    names = ["bucket", "key"]
    if len(version_ids) and pc.any(pc.is_valid(version_ids)).as_py():
        columns.append(pc.fill_null(version_ids, ""))
        names.append("versionId")
    table = pa.Table.from_arrays(columns, names=names)
    with target.open("wb") as handle:
        pacsv.write_csv(table, handle, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none"))
    return table.num_rows


RESULT_COLUMNS = ("bucket", "key", "versionId", "taskStatus", "errorCode", "resultMessage")


def results_csv(rows: Iterable[tuple[str, str, str | None, str, str, str]]) -> bytes:
    """Report_CSV_20180820 shape, no header: taskStatus is succeeded or failed; keys URL-encoded."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for bucket, key, version_id, status, error_code, message in rows:
        writer.writerow([bucket, encode_key(key), version_id or "", status, error_code, message])
    return buffer.getvalue().encode()
