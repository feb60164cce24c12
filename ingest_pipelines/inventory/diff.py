"""Compare a report with the previous one of its series: new and changed objects are candidates,
unchanged ones are left alone, deleted ones counted. Columnar, and in memory bounded by a key range."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import json
import math
import os
import resource
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest_pipelines.inventory.manifest import ReportRef
from ingest_pipelines.inventory.reader import ROW_SCHEMA
from ingest_pipelines.inventory.tags import IMAGE_KEY_PATTERN
from ingest_pipelines.state import StateStore

#: what is kept of a report for the next day's diff.
SNAPSHOT_COLUMNS = ["key", "fingerprint"]
SNAPSHOT_SCHEMA = pa.schema([("key", pa.string()), ("fingerprint", pa.string())])
CANDIDATE_COLUMNS = ["key", "version_id", "etag", "size"]
#: what a big report keeps of its rows while split by key range: the ETag and the size are in the fingerprint
#: (`etag|size|last-modified`; an ETag never holds a `|`: the reader rejects such rows), so they are taken
#: back from it for the few candidates. A third less to sort, spill and read back than ROW_SCHEMA.
SPILL_COLUMNS = ["key", "version_id", "fingerprint"]
SPILL_SCHEMA = pa.schema([ROW_SCHEMA.field(name) for name in SPILL_COLUMNS])
CANDIDATE_SCHEMA = pa.schema([ROW_SCHEMA.field(name) for name in CANDIDATE_COLUMNS])
#: rows of the current report held at once (one key range, two while one is written and the next
#: diffed); ~250 B per row with the diff's temporaries. Fewer than 100,000 keeps a run of the benchmark's
#: 1M- and 10M-row reports under 300 MiB resident.
PARTITION_ROWS = 64_000
#: one key in SAMPLE_STRIDE is sampled to place the key ranges' boundaries; the stride doubles when
#: the sample outgrows MAX_SAMPLES, so the sample stays small whatever the report's size.
SAMPLE_STRIDE = 256
MAX_SAMPLES = 200_000
#: spilled batches are buffered up to this many bytes, then written one batch per key range. At 10M rows
#: (157 ranges) 16 MiB split the report in ~15% less time than 8 MiB for the same peak (the range
#: phase's, ~250 MiB); 32 MiB gained ~7% more for +14 MiB.
SPILL_BUFFER_BYTES = 16 * 1024 * 1024
#: rows of the previous snapshot read at a time.
SNAPSHOT_BATCH_ROWS = 65_536
#: spill files are local and read once; lz4 makes them ~4x smaller (GBs for a 100M-object report)
#: for ~0.35 s of CPU per million rows (about a sixth of the whole diff) ...
SPILL_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
#: ... so they are written uncompressed (~100 B per row of the previous snapshot, ~130 B per row of
#: the report on local disk) up to this many rows of a side, and lz4-compressed beyond.
SPILL_PLAIN_ROWS = 4_000_000
SPILL_PLAIN_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)
#: the snapshot: keys and fingerprints are unique per row, so dictionary encoding only costs time
#: (written and read back ~3x faster without it, and no bigger once zstd-compressed); nothing reads
#: its min/max statistics, which cost ~10% of the writing (string comparisons over every key).
SNAPSHOT_PARQUET: dict[str, Any] = {"compression": "zstd", "use_dictionary": False, "write_statistics": False}
#: the snapshot's Parquet key-value metadata names its key ranges (the least key of each range but the first, as
#: `RangeCuts` finds them), so the next day's diff streams the file range by range with no pass over it first.
SNAPSHOT_RANGES_KEY = "ingest_pipelines.key_ranges"
#: a key range of the report over this many times `partition_rows` (the previous report's ranges no
#: longer fit: a bulk upload into one prefix since) is cut again by a sample of its own keys.
OVERSIZED_RANGE = 3
#: the snapshot holds each key range's rows together, in the order the split left them (sorted runs): the next
#: day's diff needs them grouped by range, not sorted. Sorting every range cost ~9% of the diff at 1M and 10M
#: rows (paired runs); the file is 5.0 instead of 6.2 MiB at 1M rows, 79 instead of 54 MiB at 10M (zstd finds
#: less alike neighbours). A range over this many times `partition_rows` (the bucket grew into it) is sorted
#: and cut for the next day, so ranges stay near `partition_rows` however the bucket grows.
RECUT_RANGE = 1.25
#: parsed batches (~10,000 rows each) the reader thread may be ahead of the diff.
PREFETCH_BATCHES = 2
#: key ranges diffed at once (pyarrow's kernels release the GIL); their results are written in order.
RANGE_THREADS = 1
#: a diff hands the memory Arrow's allocator keeps for reuse back to the system once the process holds this
#: much more than when the diff started (`release_memory`). Here, at 1M rows: 1.05 s instead of 1.33 s
#: (median of 5) for a peak 12 MiB higher (256 MiB, 137 of them before the diff); at 10M rows 270 MiB (+12).
#: 128 MiB gained ~10% more at 1M but peaked at 288-296 MiB at 10M.
RETAINED_BYTES = 96 * 1024 * 1024

T = TypeVar("T")


@dataclass
class InventoryDiff:
    """The diff of rows held in memory: a small report, or one key range of a big one."""

    #: new or changed image objects: key, version_id, etag, size
    candidates: pa.Table
    new: int
    changed: int
    unchanged: int
    deleted: int
    #: new or changed objects that are not .png/.jpg/.jpeg
    not_images: int


def diff_reports(current: pa.Table, previous: pa.Table | None) -> InventoryDiff:
    """`current`: ROW_SCHEMA (or SPILL_SCHEMA) rows of this report; `previous`: SNAPSHOT_COLUMNS of the last one (None: first).
    Both in memory: the whole of a small report, or one key range of a big one (`diff_inventory`)."""
    return diff_key_range(current, [] if previous is None else [previous])


def diff_key_range(current: pa.Table, previous_chunks: Iterable[pa.Table | pa.RecordBatch]) -> InventoryDiff:
    """The diff of `current` against the previous rows of the same keys, given in chunks of any size.

    Per chunk one hash lookup of every current key in the chunk's keys (`index_in`); the chunk's
    fingerprint is taken by position and compared. Keys are unique within a report (non-current
    versions were dropped), so a previous row matches at most one current row: new = never matched,
    changed = matched with another fingerprint, deleted = previous rows - matched.
    """
    current = current.combine_chunks()
    rows = current.num_rows
    keys = current.column("key").combine_chunks()
    fingerprints = current.column("fingerprint").combine_chunks()
    matched = np.zeros(rows, dtype=bool)
    same = np.zeros(rows, dtype=bool)
    deleted = 0
    for chunk in previous_chunks:
        if chunk.num_rows == 0:
            continue
        if rows == 0:
            deleted += chunk.num_rows
            continue
        chunk_keys = chunk.column("key")
        position = pc.index_in(keys, value_set=chunk_keys.combine_chunks() if isinstance(chunk_keys, pa.ChunkedArray) else chunk_keys)
        previous_fingerprint = pc.take(chunk.column("fingerprint"), position)
        found = position.is_valid().to_numpy(zero_copy_only=False)
        unchanged = pc.fill_null(pc.equal(previous_fingerprint, fingerprints), False).to_numpy(zero_copy_only=False)
        matched |= found
        same |= unchanged
        deleted += chunk.num_rows - int(found.sum())
    new = rows - int(matched.sum())
    changed_rows = current.filter(pa.array(~same)) if same.any() else current
    is_image = pc.match_substring_regex(changed_rows.column("key"), IMAGE_KEY_PATTERN)
    # sorted candidates make the Batch manifest and the results report deterministic
    candidates = _candidate_columns(changed_rows.filter(is_image)).sort_by("key")
    return InventoryDiff(
        candidates=candidates,
        new=new,
        changed=changed_rows.num_rows - new,
        unchanged=rows - changed_rows.num_rows,
        deleted=deleted,
        not_images=changed_rows.num_rows - candidates.num_rows,
    )


def _candidate_columns(rows: pa.Table) -> pa.Table:
    """CANDIDATE_COLUMNS of ROW_SCHEMA or SPILL_SCHEMA rows (the ETag and the size then from the fingerprint)."""
    if "etag" in rows.column_names:
        return rows.select(CANDIDATE_COLUMNS)
    parts = pc.split_pattern(rows.column("fingerprint"), "|", max_splits=2)
    size = pc.list_element(parts, 1)
    size = pc.if_else(pc.equal(size, ""), pa.scalar(None, pa.string()), size).cast(pa.int64())
    return pa.table([rows.column("key"), rows.column("version_id"), pc.list_element(parts, 0), size], schema=CANDIDATE_SCHEMA)


# --------------------------------------------------------------------------- bounded memory: key ranges


class SpillFiles:
    """Arrow IPC files on local disk, one per key range, written from many small slices.

    Slices are buffered (SPILL_BUFFER_BYTES in all) and written as one batch per range, so a range's
    file holds few, large batches whatever the number of ranges."""

    def __init__(self, folder: Path, name: str, schema: pa.Schema, ranges: int, rows: int = 0):
        """`rows`: about how many rows will be spilled in all (picks the compression)."""
        _allow_open_files(ranges)
        self.options = spill_options(rows)
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{name}-{index:05d}.arrow" for index in range(ranges)]
        self.schema = schema
        self.rows = [0] * ranges
        self._writers: list[pa.ipc.RecordBatchFileWriter | None] = [None] * ranges
        self._pending: list[list[pa.RecordBatch]] = [[] for _ in range(ranges)]
        self._pending_bytes = 0

    def add(self, index: int, rows: pa.RecordBatch) -> None:
        if rows.num_rows:
            self._pending[index].append(rows)
            self.rows[index] += rows.num_rows
            self._pending_bytes += rows.nbytes
            if self._pending_bytes >= SPILL_BUFFER_BYTES:
                self.flush()

    def flush(self) -> None:
        for index, pending in enumerate(self._pending):
            if not pending:
                continue
            writer = self._writers[index]
            if writer is None:
                writer = self._writers[index] = pa.ipc.new_file(str(self.paths[index]), self.schema, options=self.options)
            writer.write_table(pa.Table.from_batches(pending, schema=self.schema).combine_chunks())
            pending.clear()
        self._pending_bytes = 0

    def close(self) -> None:
        self.flush()
        for writer in self._writers:
            if writer is not None:
                writer.close()

    def chunks(self, index: int, max_rows: int = PARTITION_ROWS) -> Iterator[pa.Table]:
        """The range's rows in tables of about `max_rows` (batches are combined, never split)."""
        if self._writers[index] is None:
            return
        # an uncompressed range file is mapped, not read: its batches are the page cache's bytes, no copy into memory
        # of our own (~3% faster at 1M rows, fewer page faults); a range file is small, mapped while it is read
        with _open_spill(self.paths[index], self.options) as source:
            reader = pa.ipc.open_file(source)
            pending: list[pa.RecordBatch] = []
            size = 0
            for position in range(reader.num_record_batches):
                batch = reader.get_batch(position)
                if size and size + batch.num_rows > max_rows:
                    yield pa.Table.from_batches(pending, schema=self.schema)
                    pending, size = [], 0
                pending.append(batch)
                size += batch.num_rows
            if pending:
                yield pa.Table.from_batches(pending, schema=self.schema)

    def read(self, index: int) -> pa.Table:
        return pa.concat_tables([self.schema.empty_table(), *self.chunks(index, max_rows=2**62)])

    def remove(self, index: int) -> None:
        self.paths[index].unlink(missing_ok=True)

    def bytes(self) -> int:
        """Size of the range files on disk (after `close`)."""
        return sum(path.stat().st_size for path, writer in zip(self.paths, self._writers, strict=True) if writer is not None)


def _open_spill(path: Path, options: pa.ipc.IpcWriteOptions) -> pa.NativeFile:
    return pa.memory_map(str(path)) if options is SPILL_PLAIN_OPTIONS else pa.OSFile(str(path))


def _allow_open_files(count: int) -> None:
    """Raise the soft limit on open files (often 1,024) to fit `count` spill files plus headroom: a
    100M-object report has 1,563 key ranges, each with an open file while the report is split."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard), hard))


class KeySample:
    """Every SAMPLE_STRIDE-th key of a stream, to cut it into key ranges of about equal row counts."""

    def __init__(self, stride: int = SAMPLE_STRIDE) -> None:
        self.stride = max(1, stride)
        self.rows = 0
        self._parts: list[pa.Array] = []
        self._size = 0

    def add(self, keys: pa.Array) -> None:
        # the first sampled row continues the stride across batches
        first = (-self.rows) % self.stride
        self.rows += len(keys)
        if first >= len(keys):
            return
        self._parts.append(pc.take(keys, pa.array(np.arange(first, len(keys), self.stride))))
        self._size += len(self._parts[-1])
        while self._size > MAX_SAMPLES:
            # sample j is row j * stride: keeping the even ones leaves rows at multiples of 2 * stride
            sample = pa.concat_arrays(self._parts)
            self._parts = [pc.take(sample, pa.array(np.arange(0, len(sample), 2)))]
            self._size = len(self._parts[0])
            self.stride *= 2

    @property
    def size(self) -> int:
        """Keys held."""
        return self._size

    def boundaries(self, ranges: int) -> list[str]:
        """`ranges - 1` sorted, distinct keys: range i holds the keys in [boundary i-1, boundary i)."""
        if ranges <= 1 or not self._parts:
            return []
        sample = pc.unique(pa.concat_arrays(self._parts))
        sample = pc.take(sample, pc.sort_indices(sample))
        positions = [min(len(sample) - 1, round(index * len(sample) / ranges)) for index in range(1, ranges)]
        return sorted(set(pc.take(sample, pa.array(positions, pa.int64())).to_pylist()))


def split_by_key_range(batch: pa.RecordBatch, boundaries: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Cut `batch` at the boundaries: (range index, its rows in key order), non-empty ones only.

    One stable sort of the boundaries followed by the keys: a key's range is the number of boundaries
    sorted before it (a key equal to a boundary comes after it, in the range above), and the sorted
    batch is already cut into contiguous ranges. Cheaper than a binary search of the boundaries
    (a copy of the keys per round), and each range gets its rows sorted."""
    rows = batch.num_rows
    if not rows:
        return
    if not boundaries:
        yield 0, batch
        return
    cuts = len(boundaries)
    keys = batch.column("key")
    order = pc.sort_indices(pa.concat_arrays([pa.array(boundaries, keys.type), keys])).to_numpy()
    is_cut = order < cuts
    ids = np.cumsum(is_cut)[~is_cut]
    counts = np.bincount(ids, minlength=cuts + 1)
    if counts.max() == rows:
        yield int(ids[0]), batch
        return
    batch = batch.take(pa.array(order[~is_cut] - cuts))
    start = 0
    for index, count in enumerate(counts.tolist()):
        if count:
            yield index, batch.slice(start, count)
        start += count


@dataclass
class InventoryDiffResult:
    """Counts of a whole report's diff; its candidates (sorted by key) wait in a local Arrow file."""

    rows: int
    new: int
    changed: int
    unchanged: int
    deleted: int
    not_images: int
    candidates: int
    candidates_path: Path
    #: some candidate has a versionId (the Batch manifest then gets the versionId column)
    versioned: bool
    key_ranges: int
    previous_rows: int = 0
    range_rows_max: int = 0
    #: size of the report's spill file (the key ranges' files take as much again while it is split)
    spill_bytes: int = 0

    def candidate_batches(self) -> Iterator[pa.RecordBatch]:
        """The candidates in key order, one stored batch (one key range's share) at a time."""
        if not self.candidates_path.exists():
            return
        with pa.OSFile(str(self.candidates_path)) as source:
            reader = pa.ipc.open_file(source)
            for position in range(reader.num_record_batches):
                yield reader.get_batch(position)


def key_range_count(rows: int, partition_rows: int = PARTITION_ROWS) -> int:
    return max(1, math.ceil(rows / partition_rows))


def diff_inventory(
    batches: Iterable[pa.RecordBatch],
    previous: Path | Iterable[pa.RecordBatch] | None,
    workdir: Path,
    snapshot_path: Path,
    partition_rows: int | None = None,
) -> InventoryDiffResult:
    """Diff a report streamed as ROW_SCHEMA batches against the previous snapshot (its local Parquet file,
    or its batches in any order and size; None: first report) with memory bounded by `partition_rows`
    (default PARTITION_ROWS), not by the report's size.

    A snapshot file this code wrote holds its rows range by range in key order and names its key ranges in
    its metadata: it is read where it is. Other previous rows are spilled to a local file first, and their
    key ranges found on the way when they come sorted by key (snapshots of earlier versions). Either way,
    the previous rows' key ranges cut the key space: the report, parsed in a thread of its own, is split
    into one spill file per key range as it comes, and the previous rows of each range are read back in
    order, with no sample and no second pass over the report. Otherwise (first report, older snapshots in
    report order) the report is spilled whole, a sample of its keys cuts the ranges and both sides are
    split (`_diff_sampled`). Range by range, the report's rows of the range are diffed against the previous
    rows of the range (the next range is diffed in a worker thread while one is written); the candidates
    are appended to a local Arrow file and the range's key set to `snapshot_path` (the next day's previous).
    """
    with _MEMORY_BUDGET.diffing():
        return _diff_inventory(batches, previous, workdir, snapshot_path, partition_rows or PARTITION_ROWS)


def _diff_inventory(
    batches: Iterable[pa.RecordBatch],
    previous: Path | Iterable[pa.RecordBatch] | None,
    workdir: Path,
    snapshot_path: Path,
    partition_rows: int,
) -> InventoryDiffResult:
    workdir.mkdir(parents=True, exist_ok=True)
    # previous rows that must be spilled are spilled before the report is read: reading both at once costs
    # more peak memory (two readers' buffers) than it saves time
    spill = None
    if isinstance(previous, Path):
        spill = PreviousSpill.from_snapshot(previous, partition_rows)
        if spill is None:
            previous = ReportSnapshots.batches(previous)
    if spill is None and previous is not None:
        spill = PreviousSpill.write(previous, workdir / "previous.arrow", partition_rows)
    with (
        _DiffOutput(workdir / "candidates.arrow", snapshot_path, partition_rows) as out,
        prefetched(batches, PREFETCH_BATCHES, release_memory) as current,
    ):
        if spill is None or spill.rows == 0:
            _diff_sampled(current, None, workdir / "sampled", out, partition_rows)
        elif spill.ranged:
            _diff_on_previous_ranges(current, spill, workdir / "ranges", out, partition_rows)
        else:
            _diff_sampled(current, spill.batches(), workdir / "sampled", out, partition_rows)
        if spill is not None:
            out.result.previous_rows = spill.rows
            spill.remove()
    return out.result


def _diff_sampled(
    batches: Iterable[pa.RecordBatch],
    previous: Iterable[pa.RecordBatch] | None,
    workdir: Path,
    out: _DiffOutput,
    partition_rows: int,
) -> None:
    """Key ranges from a sample of the report's own keys: the report is spilled whole while sampled,
    then it and the previous rows are split into one spill file per range, and the ranges diffed."""
    workdir.mkdir(parents=True, exist_ok=True)
    runs_path = workdir / "report-runs.arrow"
    # at least ~64 sampled keys per range, so the ranges come out about even
    sample = KeySample(min(SAMPLE_STRIDE, max(1, partition_rows // 64)))
    with SpillStream(runs_path, SPILL_SCHEMA) as runs:
        for batch in batches:
            if batch.num_rows:
                sample.add(batch.column("key"))
                runs.write(batch.select(SPILL_COLUMNS))
    out.result.rows += sample.rows
    boundaries = sample.boundaries(key_range_count(sample.rows, partition_rows))
    ranges = len(boundaries) + 1

    current = SpillFiles(workdir / "current", "range", SPILL_SCHEMA, ranges, sample.rows)
    for batch in runs.batches():
        for index, rows in split_by_key_range(batch, boundaries):
            current.add(index, rows)
    current.close()
    out.result.spill_bytes += runs.bytes()
    runs.remove()

    # the previous report is about the size of this one
    before = SpillFiles(workdir / "previous", "range", SNAPSHOT_SCHEMA, ranges, sample.rows)
    for batch in previous or ():
        for index, rows in split_by_key_range(_snapshot_batch(batch), boundaries):
            before.add(index, rows)
    before.close()

    for index in range(ranges):
        out.submit(functools.partial(_diff_spilled_range, current, before, index, partition_rows))
    out.drain()


def _diff_spilled_range(current: SpillFiles, before: SpillFiles, index: int, partition_rows: int) -> tuple[pa.Table, InventoryDiff]:
    rows = current.read(index).combine_chunks()
    current.remove(index)
    # the previous rows of the range are streamed: after a mass deletion they can outnumber the report's
    diff = diff_key_range(rows, before.chunks(index, partition_rows))
    before.remove(index)
    return rows, diff


def _diff_on_previous_ranges(
    batches: Iterable[pa.RecordBatch], previous: PreviousSpill, workdir: Path, out: _DiffOutput, partition_rows: int
) -> None:
    """Key ranges from the previous snapshot: the report is split as it is parsed, the previous rows of
    each range are read back in key order. A range the report overfills (a bulk upload into
    one prefix since the previous report) is cut again by a sample of its own keys."""
    boundaries = previous.boundaries
    ranges = len(boundaries) + 1
    # the report is about the size of the previous one
    current = SpillFiles(workdir / "current", "range", SPILL_SCHEMA, ranges, previous.rows)
    for batch in batches:
        out.result.rows += batch.num_rows
        for index, rows in split_by_key_range(batch.select(SPILL_COLUMNS), boundaries):
            current.add(index, rows)
        release_memory()
    current.close()
    out.result.spill_bytes += current.bytes()

    for index, previous_rows in enumerate(previous.ranges(boundaries)):
        if current.rows[index] > OVERSIZED_RANGE * partition_rows:
            out.drain()
            report_rows = (batch for table in current.chunks(index) for batch in table.to_batches())
            _diff_sampled(report_rows, previous_rows, workdir / f"range-{index:05d}", out, partition_rows)
            current.remove(index)
            continue
        out.submit(functools.partial(_diff_range_against, current, index, previous_rows))
    out.drain()


def _diff_range_against(current: SpillFiles, index: int, previous_rows: list[pa.RecordBatch]) -> tuple[pa.Table, InventoryDiff]:
    rows = current.read(index).combine_chunks()
    current.remove(index)
    # one chunk: `diff_key_range` builds a hash table of each chunk's keys and looks every report key
    # up in each; the range is ~partition_rows previous rows, so holding them at once is bounded
    previous = pa.Table.from_batches(previous_rows, schema=SNAPSHOT_SCHEMA).combine_chunks()
    return rows, diff_key_range(rows, [previous])


class SpillStream:
    """Batches appended to local Arrow files and read back in the same order: uncompressed for the
    first SPILL_PLAIN_ROWS rows, then in a second, lz4-compressed file, so a small report costs no
    compression and a big one no more disk than with lz4 throughout."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = path
        self.schema = schema
        self.paths: list[Path] = []
        self.rows = 0
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._compressed = False

    def __enter__(self) -> SpillStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, batch: pa.RecordBatch) -> None:
        if self._writer is None or (not self._compressed and self.rows >= SPILL_PLAIN_ROWS):
            self.close()
            self._compressed = self.rows >= SPILL_PLAIN_ROWS
            path = self.path.with_name(f"{self.path.stem}-{len(self.paths)}{self.path.suffix}")
            self.paths.append(path)
            options = SPILL_OPTIONS if self._compressed else SPILL_PLAIN_OPTIONS
            self._writer = pa.ipc.new_file(str(path), self.schema, options=options)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        for path in self.paths:
            # read, not mapped: the pages of a mapped file stay resident until it is closed (GBs for a big report)
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for position in range(reader.num_record_batches):
                    yield reader.get_batch(position)

    def bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def remove(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


def spill_options(rows: int) -> pa.ipc.IpcWriteOptions:
    """How to write spill files that will hold about `rows` rows in all."""
    return SPILL_OPTIONS if rows > SPILL_PLAIN_ROWS else SPILL_PLAIN_OPTIONS


class KeyCuts:
    """The keys at every `partition_rows`-th row of rows that come in key order: the boundaries of
    key ranges of about `partition_rows` rows (equal keys stay in one range: a boundary is a key change)."""

    def __init__(self, partition_rows: int):
        self.partition_rows = partition_rows
        self.rows = 0
        self._first: str | None = None
        self._cuts: list[str] = []
        self._next = partition_rows

    def add(self, keys: pa.Array | pa.ChunkedArray) -> None:
        count = len(keys)
        if not count:
            return
        if self._first is None:
            self._first = keys[0].as_py()
        while self._next < self.rows + count:
            cut = keys[self._next - self.rows].as_py()
            if not self._cuts or cut > self._cuts[-1]:
                self._cuts.append(cut)
            self._next += self.partition_rows
        self.rows += count

    def boundaries(self) -> list[str]:
        cuts = list(self._cuts)
        if cuts and self._first is not None and cuts[0] <= self._first:
            cuts.pop(0)  # every row would be above it: an empty first range
        return cuts


class RangeCuts:
    """The key ranges of a snapshot written range by range in key order, each range's rows together in any
    order: a range's least key is a boundary. Neighbouring ranges of at most `partition_rows` rows together
    are merged (the bucket shrank); a range sorted because it outgrew RECUT_RANGE is cut into ranges of
    about `partition_rows` at its keys in those positions."""

    def __init__(self, partition_rows: int):
        self.partition_rows = partition_rows
        self._cuts: list[str] = []
        #: rows since the last boundary
        self._rows = 0

    def add(self, keys: pa.Array | pa.ChunkedArray, is_sorted: bool) -> None:
        count = len(keys)
        if not count:
            return
        if is_sorted:
            pieces = math.ceil(count / self.partition_rows)
            starts = [count * piece // pieces for piece in range(pieces)]
            groups = [(keys[start].as_py(), end - start) for start, end in zip(starts, [*starts[1:], count], strict=True)]
        else:
            groups = [(pc.min(keys).as_py(), count)]
        for first, rows in groups:
            if self._rows and self._rows + rows > self.partition_rows and (not self._cuts or first > self._cuts[-1]):
                self._cuts.append(first)
                self._rows = 0
            self._rows += rows

    def boundaries(self) -> list[str]:
        return list(self._cuts)


class _SnapshotFile:
    """A local snapshot file read where it is, in place of a spill of it."""

    def __init__(self, path: Path):
        self.path = path

    def batches(self) -> Iterator[pa.RecordBatch]:
        for batch in ReportSnapshots.batches(self.path):
            yield _snapshot_batch(batch)
            release_memory()  # the Parquet reader's freed pages

    def remove(self) -> None:
        """Nothing to remove: the file is the caller's."""


class PreviousSpill:
    """The previous snapshot's (key, fingerprint) rows, in local Arrow files as they came or in the
    snapshot file itself, with whether they come range by range in key order (`ranged`: sorted by key, or a
    snapshot file naming its ranges) and, if so, the ranges' boundaries."""

    def __init__(self, spill: SpillStream | _SnapshotFile, rows: int, ranged: bool, boundaries: list[str]):
        self.spill = spill
        self.rows = rows
        self.ranged = ranged
        self.boundaries = boundaries

    @classmethod
    def write(cls, previous: Iterable[pa.RecordBatch], path: Path, partition_rows: int) -> PreviousSpill:
        rows, is_sorted, last = 0, True, None
        cuts = KeyCuts(partition_rows)
        with SpillStream(path, SNAPSHOT_SCHEMA) as spill:
            for raw in previous:
                batch = _snapshot_batch(raw)
                count = batch.num_rows
                if not count:
                    continue
                keys = batch.column("key")
                if is_sorted:
                    is_sorted = (last is None or last <= keys[0].as_py()) and (
                        count == 1 or pc.all(pc.less_equal(keys.slice(0, count - 1), keys.slice(1))).as_py() is not False
                    )
                    if is_sorted:
                        cuts.add(keys)
                last = keys[count - 1].as_py()
                rows += count
                spill.write(batch)
                release_memory()  # the Parquet reader's freed pages: ~100 MiB resident for a 3M-row snapshot
        return cls(spill, rows, is_sorted, cuts.boundaries() if is_sorted else [])

    @classmethod
    def from_snapshot(cls, path: Path, partition_rows: int) -> PreviousSpill | None:
        """A snapshot file this code wrote (range by range, its key ranges in its metadata), read where it is:
        no spill and no pass over it before the report. None: an older snapshot, or other ranges."""
        metadata = pq.ParquetFile(str(path)).metadata
        raw = (metadata.metadata or {}).get(SNAPSHOT_RANGES_KEY.encode())
        if raw is None:
            return None
        ranges = json.loads(raw)
        if ranges.get("partitionRows") != partition_rows:
            return None
        return cls(_SnapshotFile(path), metadata.num_rows, True, list(ranges["boundaries"]))

    def batches(self) -> Iterator[pa.RecordBatch]:
        return self.spill.batches()

    def ranges(self, boundaries: list[str]) -> Iterator[list[pa.RecordBatch]]:
        """The rows of each key range in order, `len(boundaries) + 1` lists (`ranged` only: the rows of a range
        come together, before those of the ranges above it)."""
        index, pending = 0, []
        for batch in self.batches():
            keys, start = batch.column("key"), 0
            while index < len(boundaries):
                # range by range: the rows below the boundary are the first `below` ones
                below = pc.sum(pc.less(keys.slice(start), boundaries[index])).as_py() or 0
                if start + below == batch.num_rows:
                    break
                if below:
                    pending.append(batch.slice(start, below))
                yield pending
                pending, index, start = [], index + 1, start + below
            if start < batch.num_rows:
                pending.append(batch.slice(start))
        yield pending
        for _ in range(index, len(boundaries)):
            yield []

    def remove(self) -> None:
        self.spill.remove()


class _DiffOutput:
    """Where diffed key ranges go, in key order: the candidates' Arrow file, the new snapshot and the
    counts. Ranges are diffed in a small thread pool (pyarrow releases the GIL) and written in the
    order they were submitted."""

    def __init__(self, candidates_path: Path, snapshot_path: Path, partition_rows: int = PARTITION_ROWS):
        self.result = InventoryDiffResult(
            rows=0,
            new=0,
            changed=0,
            unchanged=0,
            deleted=0,
            not_images=0,
            candidates=0,
            candidates_path=candidates_path,
            versioned=False,
            key_ranges=0,
        )
        self.snapshot_path = snapshot_path
        #: the snapshot is written range by range in key order: its key ranges go in its metadata for the next day's diff
        self._cuts = RangeCuts(partition_rows)
        self._pending: collections.deque[Future[tuple[pa.Table, InventoryDiff]]] = collections.deque()

    def __enter__(self) -> _DiffOutput:
        self._pool = ThreadPoolExecutor(max_workers=max(1, RANGE_THREADS), thread_name_prefix="inventory-diff")
        self._snapshot = pq.ParquetWriter(str(self.snapshot_path), SNAPSHOT_SCHEMA, **SNAPSHOT_PARQUET)
        self._candidates = pa.ipc.new_file(str(self.result.candidates_path), CANDIDATE_SCHEMA, options=SPILL_OPTIONS)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.drain()
                ranges = {"partitionRows": self._cuts.partition_rows, "boundaries": self._cuts.boundaries()}
                self._snapshot.add_key_value_metadata({SNAPSHOT_RANGES_KEY: json.dumps(ranges)})
        finally:
            for future in self._pending:
                future.cancel()
            self._pool.shutdown(wait=True)
            self._candidates.close()
            self._snapshot.close()

    def submit(self, job: Callable[[], tuple[pa.Table, InventoryDiff]]) -> None:
        """Diff one range (`job` returns its rows and their diff) in the pool; the oldest is written
        once more than RANGE_THREADS are pending."""
        partition_rows = self._cuts.partition_rows
        if RANGE_THREADS <= 0:
            self._write(*_range_snapshot(job, partition_rows))
            return
        self._pending.append(self._pool.submit(_range_snapshot, job, partition_rows))
        # one more than the threads: a range is written while the next ones are diffed
        while len(self._pending) > RANGE_THREADS:
            self._write(*self._pending.popleft().result())

    def drain(self) -> None:
        while self._pending:
            self._write(*self._pending.popleft().result())

    def _write(self, snapshot: pa.Table, diff: InventoryDiff) -> None:
        result = self.result
        result.key_ranges += 1
        result.range_rows_max = max(result.range_rows_max, snapshot.num_rows)
        if snapshot.num_rows:
            self._cuts.add(snapshot.column("key"), _recut(snapshot.num_rows, self._cuts.partition_rows))
            self._snapshot.write_table(snapshot)
        result.new += diff.new
        result.changed += diff.changed
        result.unchanged += diff.unchanged
        result.deleted += diff.deleted
        result.not_images += diff.not_images
        if diff.candidates.num_rows:
            result.candidates += diff.candidates.num_rows
            result.versioned = result.versioned or diff.candidates.column("version_id").null_count < diff.candidates.num_rows
            self._candidates.write_table(diff.candidates.combine_chunks())
        release_memory()


def _recut(rows: int, partition_rows: int) -> bool:
    """A key range of `rows` rows is sorted and cut into smaller ones for the next day."""
    return rows > RECUT_RANGE * partition_rows


def _range_snapshot(job: Callable[[], tuple[pa.Table, InventoryDiff]], partition_rows: int) -> tuple[pa.Table, InventoryDiff]:
    """A diffed range's rows for the snapshot: as they are, or sorted if the range is to be cut (`RangeCuts`)."""
    rows, diff = job()
    snapshot = rows.select(SNAPSHOT_COLUMNS)
    if _recut(snapshot.num_rows, partition_rows):
        snapshot = snapshot.take(pc.sort_indices(snapshot.column("key")))
    snapshot = snapshot.combine_chunks()
    del rows
    release_memory()
    return snapshot, diff


class _MemoryBudget:
    """How much more than at its start a diff may hold resident before freed memory is handed back.

    mimalloc (Arrow's default allocator) keeps what was freed for reuse: never handing it back peaked at
    316 MiB at 1M rows (240 MiB handing it back after every batch and range), for ~50 MiB of live Arrow
    memory. Handing it back every time cost a third of the diff's CPU: memory given back and touched
    again took ~140,000 page faults per million rows (~900 when kept), each dear on a virtual machine."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._baselines: list[int] = []
        #: diffs running, and the process's own transparent-huge-page setting before the first of them
        self._running = 0
        self._huge_pages_were_disabled: bool | None = None

    @contextlib.contextmanager
    def diffing(self) -> Iterator[None]:
        """A diff runs: the resident size now is its baseline (the lowest of the diffs running counts), and
        transparent huge pages are off for the process while any diff runs (`disable_huge_pages`)."""
        baseline = resident_bytes()
        with self._lock:
            if self._running == 0:
                self._huge_pages_were_disabled = disable_huge_pages(True)
            self._running += 1
            if baseline is not None:
                self._baselines.append(baseline)
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if baseline is not None:
                    self._baselines.remove(baseline)
                if self._running == 0 and self._huge_pages_were_disabled is False:
                    disable_huge_pages(False)

    def exceeded(self) -> bool:
        """Over the budget; also when no diff runs or the resident size cannot be read (hand back always)."""
        with self._lock:
            baseline = min(self._baselines, default=None)
        if baseline is None:
            return True
        resident = resident_bytes()
        return resident is None or resident > baseline + RETAINED_BYTES


_MEMORY_BUDGET = _MemoryBudget()


def resident_bytes() -> int | None:
    """This process's resident size now (Linux); None where /proc cannot tell."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: prctl(2) options (Linux >= 3.15)
_PR_SET_THP_DISABLE, _PR_GET_THP_DISABLE = 41, 42


def disable_huge_pages(disabled: bool) -> bool | None:
    """Turn transparent huge pages off (or on again) for this process; returns whether they were off before,
    None where it cannot be done (not Linux). mimalloc (Arrow's allocator) asks for huge pages on its arena:
    each first touch of a 2 MiB page zeroes all of it, and every small piece handed back splits one. The diff
    hands freed memory back and touches it again all the time (`release_memory`): with huge pages off it
    took ~9% less time at 1M rows and peaked ~15 MiB lower in paired runs; the pages already made stay. On
    jemalloc (the code location's pool, see `ingest_pipelines.ARROW_MEMORY_POOL`) it made no difference either
    way in paired runs: it is for processes on mimalloc (pyarrow loaded first, or the environment's choice)."""
    libc = _libc()
    if libc is None:
        return None
    before = libc.prctl(_PR_GET_THP_DISABLE, 0, 0, 0, 0)
    if before < 0 or libc.prctl(_PR_SET_THP_DISABLE, int(disabled), 0, 0, 0) != 0:
        return None
    return bool(before)


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def release_memory() -> None:
    """Hand the memory Arrow's allocator holds for reuse back to the system, once a running diff holds
    RETAINED_BYTES more than at its start (always, outside a diff)."""
    if _MEMORY_BUDGET.exceeded():
        pa.default_memory_pool().release_unused()


@contextlib.contextmanager
def prefetched(items: Iterable[T], depth: int, after_each: Callable[[], None] | None = None) -> Iterator[Iterator[T]]:
    """Iterate `items` in a thread of its own, up to `depth` items ahead of the consumer; an error in
    it is raised in the consumer. Leaving the block stops the thread and closes the iterator there."""
    if depth <= 0:
        yield iter(items)
        return
    queue: Queue[tuple[bool, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((False, item)):
                    return
                if after_each is not None:
                    after_each()
            put((True, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((True, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            done, value = queue.get()
            if done:
                if value is not None:
                    raise value
                return
            yield value

    thread = threading.Thread(target=produce, name="inventory-reader", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(Empty):
                queue.get(timeout=0.1)
        thread.join()


def _snapshot_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A previous snapshot's rows as SNAPSHOT_SCHEMA (whatever else its file holds)."""
    columns = [batch.column(name).cast(pa.string()) for name in SNAPSHOT_COLUMNS]
    return pa.RecordBatch.from_arrays(columns, schema=SNAPSHOT_SCHEMA)


class ReportSnapshots:
    """Each processed report's key set as Parquet in the state store, so day 2 diffs against day 1:
    `{workflow}/inventory/snapshots/{source-bucket}/{config-id}/{timestamp}.parquet`.

    One file of (key, fingerprint) whatever the version: older runs wrote it in report order, later ones
    sorted by key, newer ones range by range in key order (`RangeCuts`); all are read back in batches, so none
    has to fit in memory."""

    def __init__(self, state: StateStore, workflow: str):
        self.state = state
        self.base = f"{workflow}/inventory/snapshots/"

    def _key(self, ref: ReportRef) -> str:
        return f"{self.base}{ref.series}/{ref.timestamp}.parquet"

    def previous(self, ref: ReportRef) -> str | None:
        """The timestamp of the latest snapshot of the series older than `ref` (backfills diff against
        the day before them, not against the newest report)."""
        older = [
            key.rsplit("/", 1)[1].removesuffix(".parquet")
            for key in self.state.keys(f"{self.base}{ref.series}/")
            if key.endswith(".parquet")
        ]
        older = [stamp for stamp in older if stamp < ref.timestamp]
        return max(older) if older else None

    def download(self, ref: ReportRef, timestamp: str, path: Path) -> Path:
        key = f"{self.base}{ref.series}/{timestamp}.parquet"
        with self.state.store.open(key) as body, path.open("wb") as handle:
            while chunk := body.read(1024 * 1024):
                handle.write(chunk)
        return path

    @staticmethod
    def batches(path: Path) -> Iterator[pa.RecordBatch]:
        """A downloaded snapshot's (key, fingerprint) rows, SNAPSHOT_BATCH_ROWS at a time. Read by the calling
        thread, without pre-buffering: read while the key ranges are diffed, the default reader (pre-buffered,
        Arrow's thread pool) held ~50 MiB more at 10M rows (306 MiB peak) and was no faster."""
        parquet = pq.ParquetFile(str(path), pre_buffer=False)
        yield from parquet.iter_batches(batch_size=SNAPSHOT_BATCH_ROWS, columns=SNAPSHOT_COLUMNS, use_threads=False)

    def load(self, ref: ReportRef, timestamp: str) -> pa.Table:
        """A whole snapshot in memory (small reports and tests; imports stream it with `batches`)."""
        with tempfile.TemporaryDirectory(prefix="inventory-snapshot-") as tmp:
            path = self.download(ref, timestamp, Path(tmp, "snapshot.parquet"))
            return pq.read_table(path, columns=SNAPSHOT_COLUMNS)

    @staticmethod
    def write(current: pa.Table, path: Path) -> None:
        """A report's snapshot as a local file, from a report held in memory."""
        pq.write_table(current.select(SNAPSHOT_COLUMNS).sort_by("key"), path, **SNAPSHOT_PARQUET)

    def upload(self, ref: ReportRef, path: Path) -> str:
        key = self._key(ref)
        with path.open("rb") as handle:
            self.state.store.upload_fileobj(key, handle)
        return key

    def save(self, ref: ReportRef, current: pa.Table) -> str:
        with tempfile.TemporaryDirectory(prefix="inventory-snapshot-") as tmp:
            path = Path(tmp, "snapshot.parquet")
            self.write(current, path)
            return self.upload(ref, path)


def spill_folder(spill_dir: str | None) -> str | None:
    """The folder temp folders of an import go in (created if missing); None: the system's temp folder."""
    if spill_dir:
        os.makedirs(spill_dir, exist_ok=True)
    return spill_dir or None
