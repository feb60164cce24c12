"""Record files: change records written as JSON Lines or Parquet into an object store, and read back.

Files hold at most `buffer_size` records and are named from the batch id, so re-writing a batch overwrites it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ingest_pipelines.records.record import ChangeRecord
from ingest_pipelines.storage import ObjectStore

#: Column names of a Parquet record file, in order (Conduit's columns, payload as real binary); the
#: Arrow schema is built on first use: pyarrow costs half a second to import in every process that loads
#: the code location, and most workflows write no Parquet.
PARQUET_COLUMNS = ("operation", "position", "payload", "key", "metadata")


@functools.lru_cache(maxsize=1)
def parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("operation", pa.string(), nullable=False),
            pa.field("position", pa.string(), nullable=False),
            pa.field("payload", pa.binary(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("metadata", pa.map_(pa.string(), pa.string()), nullable=False),
        ]
    )


#: The keys of one JSON line, in the order they are written.
JSON_KEYS = ("Operation", "Position", "Payload", "Key", "Metadata")


class RecordFileError(ValueError):
    """A record file that cannot be read back; the message names the file and what is wrong."""


def encode_json_lines(records: Sequence[ChangeRecord]) -> bytes:
    """One JSON object per line. JSON has no bytes type, so Payload is base64 (as Go's encoding/json does)."""
    dumps, b64, option = orjson.dumps, base64.b64encode, orjson.OPT_APPEND_NEWLINE
    return b"".join(
        dumps(
            {
                "Operation": r.operation,
                "Position": r.position,
                "Payload": b64(r.payload).decode("ascii"),
                "Key": r.key,
                "Metadata": r.metadata,
            },
            option=option,
        )
        for r in records
    )


def decode_json_lines(data: bytes, name: str) -> list[ChangeRecord]:
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line:
            continue
        try:
            item = orjson.loads(line)
            if not isinstance(item, dict) or set(item) != set(JSON_KEYS):
                found = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise RecordFileError(f"expected keys {', '.join(JSON_KEYS)}, found {found}")
            records.append(
                ChangeRecord(
                    operation=item["Operation"],
                    position=item["Position"],
                    key=item["Key"],
                    metadata=item["Metadata"],
                    payload=base64.b64decode(item["Payload"], validate=True),
                )
            )
        except (orjson.JSONDecodeError, binascii.Error, ValueError, TypeError) as exc:
            raise RecordFileError(f"{name}: line {number}: {exc}") from None
    return records


def encode_parquet(records: Sequence[ChangeRecord]) -> bytes:
    """One table (one row group) per file; metadata as map<string,string>, payload as binary."""
    columns = (
        [r.operation for r in records],
        [r.position for r in records],
        [r.payload for r in records],
        [r.key for r in records],
        [list(r.metadata.items()) for r in records],
    )
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    table = pa.Table.from_arrays([pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)], schema=schema)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def decode_parquet(data: bytes, name: str) -> list[ChangeRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as exc:
        raise RecordFileError(f"{name}: not a Parquet file: {exc}") from None
    missing = [column for column in PARQUET_COLUMNS if column not in table.column_names]
    if missing:
        raise RecordFileError(f"{name}: missing column(s) {', '.join(missing)}")
    columns = [table.column(column).to_pylist() for column in PARQUET_COLUMNS]
    try:
        return [
            ChangeRecord(operation=op, position=position, payload=payload, key=key, metadata=dict(metadata or ()))
            for op, position, payload, key, metadata in zip(*columns, strict=True)
        ]
    except ValueError as exc:
        raise RecordFileError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class RecordFileFormat:
    """How one `format:` value is written: file extension, content type, encoder and decoder."""

    extension: str
    content_type: str
    encode: Callable[[Sequence[ChangeRecord]], bytes]
    decode: Callable[[bytes, str], list[ChangeRecord]]


FORMATS = {
    "json": RecordFileFormat(".jsonl", "application/x-ndjson", encode_json_lines, decode_json_lines),
    "parquet": RecordFileFormat(".parquet", "application/vnd.apache.parquet", encode_parquet, decode_parquet),
}


def _file_format(format: str) -> RecordFileFormat:
    try:
        return FORMATS[format]
    except KeyError:
        raise ValueError(f"unknown record format {format!r} (expected one of {', '.join(FORMATS)})") from None


def record_file_key(batch_id: str, index: int, format: str) -> str:
    """The key of a batch's `index`-th file: `{batch_id}-{index:05d}.jsonl` / `.parquet`."""
    return f"{batch_id}-{index:05d}{_file_format(format).extension}"


def write_records(store: ObjectStore, batch_id: str, records: Iterable[ChangeRecord], format: str, buffer_size: int) -> list[str]:
    """Write a batch's records as files of at most `buffer_size` records; return their keys in order.

    `records` is consumed one file at a time. Each file is one atomic PUT/rename; afterwards any file of
    the same batch beyond the ones just written (a previous write with a smaller bufferSize or the
    other format) is deleted, so a batch is always exactly the files returned.
    """
    file_format = _file_format(format)
    if buffer_size < 1:
        raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
    if not batch_id:
        raise ValueError("batch_id must not be empty")
    keys: list[str] = []
    iterator = iter(records)
    for index in itertools.count():
        chunk = list(itertools.islice(iterator, buffer_size))
        if not chunk:
            break
        key = record_file_key(batch_id, index, format)
        store.put_bytes(key, file_format.encode(chunk), content_type=file_format.content_type)
        keys.append(key)
    _delete_stale_files(store, batch_id, format, len(keys))
    return keys


def _delete_stale_files(store: ObjectStore, batch_id: str, format: str, written: int) -> None:
    # Files of a batch are written in index order, so the stale ones form a run starting at `written`
    # (or at 0 for the other format): probing with HEAD until the first gap avoids listing the store.
    for other in FORMATS:
        index = written if other == format else 0
        while store.head(key := record_file_key(batch_id, index, other)) is not None:
            store.delete(key)
            index += 1


_FILE_NAME = re.compile(r"-\d{5}(\.jsonl|\.parquet)$")


def read_records(store: ObjectStore, key: str) -> list[ChangeRecord]:
    """Read one record file back; the format follows from the extension."""
    match = _FILE_NAME.search(key)
    if match is None:
        raise RecordFileError(f"{store.uri(key)}: not a record file name (expected <batch>-NNNNN.jsonl or .parquet)")
    file_format = next(f for f in FORMATS.values() if f.extension == match.group(1))
    return file_format.decode(store.get_bytes(key), store.uri(key))
