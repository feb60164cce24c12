"""Stream the rows of an S3 Inventory report (gzip CSV, Parquet, ORC) as normalized Arrow record batches.

Data files are downloaded to a temp file while their MD5 is checked; a bad file or row is counted, not fatal.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.orc as paorc
import pyarrow.parquet as pq

from ingest_pipelines.inventory.manifest import DataFile, InventoryManifest

#: what every reader yields, whatever the file format.
ROW_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("version_id", pa.string()),
        ("etag", pa.string()),
        ("size", pa.int64()),
        # etag|size|last-modified: one column to compare against the previous report (last-modified
        # is not kept on its own: every column is spilled to disk and held per key range by the diff)
        ("fingerprint", pa.string()),
    ]
)
#: inventory field names (CSV `VersionId`, Parquet `version_id`) folded to one spelling.
WANTED = {"key": "key", "versionid": "version_id", "etag": "etag", "size": "size", "lastmodifieddate": "last_modified"}
FLAGS = {"islatest": "is_latest", "isdeletemarker": "is_delete_marker"}
MAX_EXAMPLES = 5
#: the CSV reader reads ahead up to ~17 blocks whatever use_threads says: 1 MiB blocks keep that to
#: ~17 MiB (4 MiB blocks held ~70 MiB of a big file), for the same CPU time per row.
CSV_BLOCK_SIZE = 1 * 1024 * 1024
BATCH_ROWS = 65536
DOWNLOAD_CHUNK = 1024 * 1024


def _fold(name: str) -> str:
    return name.replace("_", "").lower()


@dataclass
class ReadStats:
    """Rows read, and malformed rows and files of one report with the first examples, for metadata."""

    rows: int = 0
    malformed_rows: int = 0
    malformed_files: int = 0
    examples: list[str] = field(default_factory=list)
    file_errors: list[str] = field(default_factory=list)

    def row(self, text: str, count: int = 1) -> None:
        self.malformed_rows += count
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(text[:300])

    def file(self, text: str) -> None:
        self.malformed_files += 1
        if len(self.file_errors) < MAX_EXAMPLES:
            self.file_errors.append(text[:300])


class DataFileError(RuntimeError):
    """A data file of a report cannot be used (download failed, MD5 mismatch, unreadable)."""


def download_data_file(client: Any, bucket: str, data_file: DataFile, target: Path) -> None:
    """Stream one data file to disk and verify its MD5checksum from the manifest."""
    digest = hashlib.md5()
    try:
        body = client.get_object(Bucket=bucket, Key=data_file.key)["Body"]
        with target.open("wb") as handle:
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                digest.update(chunk)
                handle.write(chunk)
    except Exception as exc:
        raise DataFileError(f"s3://{bucket}/{data_file.key}: download failed: {exc}") from exc
    actual = digest.hexdigest()
    if actual != data_file.md5:
        raise DataFileError(f"s3://{bucket}/{data_file.key}: MD5 mismatch (manifest says {data_file.md5}, file is {actual})")


def _strings(column: pa.Array) -> pa.Array:
    """A column as non-null strings ("" for null); CSV columns already are."""
    if not pa.types.is_string(column.type):
        column = column.cast(pa.string())
    return pc.fill_null(column, "") if column.null_count else column


def _offsets(column: pa.Array) -> np.ndarray:
    """A string array's value offsets (int32, zero-copy): len(column) + 1 of them."""
    return np.frombuffer(column.buffers()[1], dtype=np.int32, count=len(column) + 1, offset=column.offset * 4)


def _string_bytes(column: pa.Array) -> np.ndarray:
    """The bytes of a string array's values (all of them, as uint8, zero-copy): a check for one byte
    over them is ~20x cheaper than `pc.match_substring`, which is per-row."""
    if not len(column):
        return np.empty(0, dtype=np.uint8)
    offsets = _offsets(column)
    data = column.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    if data is None or end <= start:
        return np.empty(0, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)


def _replace_byte(column: pa.Array, old: int, new: int) -> pa.Array:
    """`column` with every byte `old` made `new`, offsets untouched: for two ASCII characters this is
    `pc.replace_substring` (an ASCII byte never occurs inside a multi-byte UTF-8 sequence)."""
    validity, offsets, data = column.buffers()
    values = np.frombuffer(data, dtype=np.uint8).copy()
    values[values == old] = new
    return pa.StringArray.from_buffers(len(column), offsets, pa.py_buffer(values), validity, column.null_count, column.offset)


def decode_keys(keys: pa.Array) -> tuple[pa.Array, pa.Array | None]:
    """URL-decode CSV inventory keys with unquote_plus semantics (as S3 Inventory encodes them).
    `+` -> space is columnar; only keys with a `%` go through Python. Returns (keys, valid mask or
    None when every key decoded)."""
    keys = _strings(keys)
    values = _string_bytes(keys)
    if not len(values):
        return keys, None
    if (values == ord("+")).any():
        keys = _replace_byte(keys, ord("+"), ord(" "))
    if not (values == ord("%")).any():
        return keys, None
    percent = pc.match_substring(keys, "%")
    decoded: list[str] = []
    ok: list[bool] = []
    for text in pc.filter(keys, percent).to_pylist():
        try:
            # `+` is already a space, so unquote here is unquote_plus on the original
            decoded.append(unquote(text, errors="strict"))
            ok.append(True)
        except UnicodeDecodeError:
            decoded.append(text)
            ok.append(False)
    keys = pc.replace_with_mask(keys, percent, pa.array(decoded, pa.string()))
    if all(ok):
        return keys, None
    return keys, pc.replace_with_mask(pa.repeat(True, len(keys)), percent, pa.array(ok))


def _column(batch: pa.RecordBatch | pa.Table, names: dict[str, str], wanted: str) -> pa.Array | None:
    name = names.get(wanted)
    if name is None:
        return None
    column = batch.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _all_equal(column: pa.Array, text: str) -> bool:
    """Every value of a string column is `text`, checked on its bytes (a flag column that is "true"
    on every row costs no kernel per row)."""
    if not pa.types.is_string(column.type) or column.null_count:
        return False
    expected = np.frombuffer(text.encode(), dtype=np.uint8)
    values = _string_bytes(column)
    if len(values) != len(column) * len(expected):
        return False
    if not len(column):
        return True
    offsets = _offsets(column)
    return bool((np.diff(offsets) == len(expected)).all() and (values.reshape(-1, len(expected)) == expected).all())


def _and(mask: pa.Array | None, other: pa.Array) -> pa.Array:
    """`mask AND other`, None standing for all true."""
    return other if mask is None else pc.and_(mask, other)


def _truth(column: pa.Array) -> pa.Array:
    if pa.types.is_boolean(column.type):
        return column
    return pc.is_in(_strings(column), value_set=pa.array(["true", "TRUE", "True"]))


def normalize(batch: pa.RecordBatch | pa.Table, url_encoded: bool, problems: ReadStats, where: str) -> pa.RecordBatch:
    """Inventory columns -> ROW_SCHEMA; drop non-current versions and delete markers; count malformed rows.
    Columnar throughout: the common case (clean CSV) costs a handful of Arrow kernels per batch."""
    names: dict[str, str] = {}
    for name in batch.schema.names:
        folded = _fold(name)
        if folded in WANTED:
            names[WANTED[folded]] = name
        elif folded in FLAGS:
            names[FLAGS[folded]] = name
    rows = batch.num_rows
    problems.rows += rows
    raw_key = _column(batch, names, "key")
    if raw_key is None:
        problems.row(f"{where}: no key column", rows)
        return pa.RecordBatch.from_pylist([], schema=ROW_SCHEMA)
    if url_encoded:
        key, decodable = decode_keys(raw_key)
    else:
        key, decodable = _strings(raw_key), None
    # None: every row valid so far (no empty key, the common case, seen on the offsets alone)
    valid: pa.Array | None = None
    if rows and not (np.diff(_offsets(key)) > 0).all():
        valid = pc.not_equal(key, "")
    if decodable is not None:
        valid = _and(valid, decodable)

    def text(wanted: str) -> pa.Array:
        column = _column(batch, names, wanted)
        return pa.repeat("", rows) if column is None else _strings(column)

    raw_size = _column(batch, names, "size")
    if raw_size is None:
        size, size_text = pa.nulls(rows, pa.int64()), pa.repeat("", rows)
    elif pa.types.is_integer(raw_size.type):
        size = raw_size.cast(pa.int64())
        size_text = _strings(size)
    else:
        size_text = _strings(raw_size)
        try:
            size = size_text.cast(pa.int64())
        except pa.ArrowInvalid:
            # empty (delete markers) or garbage somewhere in the batch: the slow, exact path
            digits = pc.match_substring_regex(size_text, r"^\d+$")
            valid = _and(valid, pc.or_(digits, pc.equal(size_text, "")))
            size = pc.if_else(digits, size_text, pa.scalar(None, pa.string())).cast(pa.int64())

    etag = text("etag")
    if (_string_bytes(etag) == ord("|")).any():
        # an ETag is hex digits (and `-parts`): one with a `|` would not be taken back from the fingerprint
        valid = _and(valid, pc.invert(pc.match_substring(etag, "|")))

    keep = valid
    for flag, drop_when in (("is_latest", False), ("is_delete_marker", True)):
        column = _column(batch, names, flag)
        # the usual report: every row is the latest version and no delete marker, nothing to drop
        if column is None or _all_equal(column, "false" if drop_when else "true"):
            continue
        truth = _truth(column)
        keep = _and(keep, pc.invert(pc.fill_null(truth, False)) if drop_when else pc.fill_null(truth, True))

    bad = rows - (pc.sum(valid).as_py() or 0) if valid is not None else 0
    if valid is not None and bad:
        first = pc.filter(key, pc.invert(valid)).slice(0, 1).to_pylist()
        problems.row(
            f"{where}: {bad} row(s) with an empty or undecodable key, a non-numeric size or a `|` in the ETag (first key {first[0]!r})",
            bad,
        )

    last_modified = text("last_modified")
    fingerprint = pc.binary_join_element_wise(etag, size_text, last_modified, "|")
    version_id = _column(batch, names, "version_id")
    if version_id is None:
        version_id = pa.nulls(rows, pa.string())
    else:
        version_id = _strings(version_id)
        # an unversioned bucket's column is all empty: nulls without a kernel over it
        if len(_string_bytes(version_id)):
            version_id = pc.if_else(pc.equal(version_id, ""), pa.scalar(None, pa.string()), version_id)
        else:
            version_id = pa.nulls(rows, pa.string())
    out = pa.RecordBatch.from_arrays([key, version_id, etag, size, fingerprint], schema=ROW_SCHEMA)
    return out if keep is None or pc.all(keep).as_py() else out.filter(keep)


def read_csv_file(path: Path, columns: list[str], problems: ReadStats, where: str) -> Iterator[pa.RecordBatch]:
    """gzip CSV without a header, columns per fileSchema; rows with the wrong field count are skipped and counted."""

    def invalid_row(row: Any) -> str:
        problems.row(f"{where}: row {row.number}: expected {row.expected_columns} fields, got {row.actual_columns}: {row.text}")
        return "skip"

    include = [name for name in columns if _fold(name) in WANTED or _fold(name) in FLAGS]
    gzipped = _is_gzip(path)
    if _is_empty(path, gzipped):
        # a data file of a bucket (slice) with no objects: zero rows, not a broken file
        return
    stream = pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") if gzipped else pa.OSFile(str(path))
    reader = pacsv.open_csv(
        stream,
        # the blocks parsed in Arrow's thread pool: the diff of a 1M-row report ~5-10% faster than one thread (2 cores)
        read_options=pacsv.ReadOptions(column_names=columns, block_size=CSV_BLOCK_SIZE, use_threads=True),
        parse_options=pacsv.ParseOptions(invalid_row_handler=invalid_row, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in columns}, include_columns=include, strings_can_be_null=False
        ),
    )
    with stream:
        for batch in reader:
            yield normalize(batch, url_encoded=True, problems=problems, where=where)


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _is_empty(path: Path, gzipped: bool) -> bool:
    if not gzipped:
        return path.stat().st_size == 0
    with pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") as stream:
        return not stream.read(1)


def read_parquet_file(path: Path, problems: ReadStats, where: str) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(str(path))
    include = [name for name in parquet.schema_arrow.names if _fold(name) in WANTED or _fold(name) in FLAGS]
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=include):
        yield normalize(batch, url_encoded=False, problems=problems, where=where)


def read_orc_file(path: Path, problems: ReadStats, where: str) -> Iterator[pa.RecordBatch]:
    orc = paorc.ORCFile(str(path))
    include = [name for name in orc.schema.names if _fold(name) in WANTED or _fold(name) in FLAGS]
    for stripe in range(orc.nstripes):
        # one stripe at a time keeps memory at a stripe's size (64 MiB at most by S3's writer)
        yield normalize(orc.read_stripe(stripe, columns=include), url_encoded=False, problems=problems, where=where)


def read_data_file(path: Path, file_format: str, columns: list[str], problems: ReadStats, where: str) -> Iterator[pa.RecordBatch]:
    """One local data file; a file that cannot be parsed is counted as malformed (rows read so far stay)."""
    try:
        if file_format == "CSV":
            yield from read_csv_file(path, columns, problems, where)
        elif file_format == "Parquet":
            yield from read_parquet_file(path, problems, where)
        else:
            yield from read_orc_file(path, problems, where)
    except (pa.ArrowException, OSError, EOFError) as exc:
        problems.file(f"{where}: cannot be read as {file_format}: {exc}")


def read_inventory(
    client: Any, bucket: str, manifest: InventoryManifest, problems: ReadStats, workdir: Path | None = None
) -> Iterator[pa.RecordBatch]:
    """Every current object of a report, file by file; a file with a bad MD5 is skipped and reported.
    Each data file is downloaded to a temp folder (in `workdir` if given) and removed once read."""
    with tempfile.TemporaryDirectory(prefix="inventory-", dir=workdir) as tmp:
        for index, data_file in enumerate(manifest.files):
            target = Path(tmp, f"part-{index}")
            try:
                download_data_file(client, bucket, data_file, target)
            except DataFileError as exc:
                problems.file(str(exc))
                continue
            try:
                yield from read_data_file(target, manifest.file_format, manifest.file_schema, problems, data_file.key)
            finally:
                os.unlink(target)
