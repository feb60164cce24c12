"""Inventory parsing, diff and Batch Operations manifest for gzip CSV reports (250,000 and 1,000,000 rows;
10,000,000 with `--rows 10000000`), against the same diff written as one DuckDB query over the two reports
and against pyarrow's own CSV read; also the engines considered for the diff (DuckDB inside the product,
Acero's hash join, key ranges sampled from the report). Each variant runs in its own process, whose peak
resident memory (VmHWM) is reported; the timed variants run `--repeat` times, interleaved, and the median
of each round's ratio is reported (the machine is shared: one run alone says little)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import timed

#: report sizes (rows) measured side by side: peak memory of the streamed diff must not grow with them
SIZES = (250_000, 1_000_000)
#: above this many rows the variants that hold a whole report in memory are not run (GBs at 10M rows)
IN_MEMORY_MAX_ROWS = 1_000_000
FILES = 4
#: DuckDB inside the product: its memory limit (the process also holds the interpreter, pyarrow, the reader)
DUCKDB_MEMORY_LIMIT = "150MB"
#: day 2 differs from day 1 by this share of changed, new and deleted rows
CHANGED, NEW, DELETED = 0.05, 0.01, 0.01


def _keys(ids: Any) -> Any:
    """`faces/{i % 997:03d}/{face+}{i:08d}.{jpg|txt}` as S3 Inventory writes them (URL-encoded: one key in ten
    has a space, written `+`); one key in two is an image. Columnar: 10M keys in seconds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    folder = pc.utf8_lpad(pa.array(ids % 997).cast(pa.string()), 3, "0")
    name = pc.utf8_lpad(pa.array(ids).cast(pa.string()), 8, "0")
    space = pa.array(np.where(ids % 10 == 0, "face+", ""))
    ext = pa.array(np.where(ids % 2 == 1, "jpg", "txt"))
    return pc.binary_join_element_wise("faces/", folder, "/", space, name, ".", ext, "")


def _etags(ids: Any, day: int, rows: int) -> Any:
    """32 hex digits from the id; on day 2 one row in 1/CHANGED of day 1's changes its last digit."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    changed = (ids < rows) & (ids % int(1 / CHANGED) == 0) if day == 2 else np.zeros(len(ids), dtype=bool)
    digits = pc.utf8_lpad(pa.array(ids).cast(pa.string()), 31, "0")
    return pc.binary_join_element_wise(digits, pa.array(np.where(changed, "f", "0")), "")


def generate(folder: Path, rows: int) -> dict[str, Any]:
    """Day 1 and day 2 reports as S3 Inventory gzip CSV files (no header, every field quoted, keys URL-encoded)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def write(name: str, ids: Any, day: int) -> None:
        (folder / name).mkdir()
        per_file = -(-len(ids) // FILES)
        for index in range(FILES):
            part = ids[index * per_file : (index + 1) * per_file]
            n = len(part)
            table = pa.table(
                {
                    "Bucket": pa.repeat(pa.scalar("images"), n),
                    "Key": _keys(part),
                    "VersionId": pa.repeat(pa.scalar(""), n),
                    "IsLatest": pa.repeat(pa.scalar("true"), n),
                    "IsDeleteMarker": pa.repeat(pa.scalar("false"), n),
                    "Size": pa.array(part).cast(pa.string()),
                    "LastModifiedDate": pa.repeat(pa.scalar("2024-05-01T00:00:00.000Z"), n),
                    "ETag": _etags(part, day, rows),
                    "StorageClass": pa.repeat(pa.scalar("STANDARD"), n),
                }
            )
            with pa.CompressedOutputStream(str(folder / name / f"part-{index}.csv.gz"), "gzip") as stream:
                options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
                pacsv.write_csv(table, stream, write_options=options)

    deleted, new = int(rows * DELETED), int(rows * NEW)
    write("day1", np.arange(rows, dtype=np.int64), 1)
    write("day2", np.concatenate([np.arange(deleted, rows), np.arange(rows, rows + new)]).astype(np.int64), 2)
    return {"day2_rows": rows - deleted + new, "day2_gzip_mib": sum(p.stat().st_size for p in (folder / "day2").iterdir()) / 2**20}


# --------------------------------------------------------------------------- variants (one process each)


def _files(folder: Path, day: str) -> list[Path]:
    return sorted((folder / day).glob("*.csv.gz"))


def variant_pyarrow_read(folder: Path) -> dict[str, Any]:
    """Baseline: pyarrow.csv.read_csv of every day-2 file, all columns as strings, whole files."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from ingest_pipelines.testing.inventory_report import CSV_SCHEMA

    rows = 0
    with timed() as clock:
        for path in _files(folder, "day2"):
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=CSV_SCHEMA),
                convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in CSV_SCHEMA}),
            )
            rows += table.num_rows
            del table
    return {"rows": rows, "seconds": clock["seconds"]}


def variant_gunzip(folder: Path) -> dict[str, Any]:
    """Lower bound: only gzip-decompress the day-2 files (what every reader must do)."""
    import pyarrow as pa

    total = 0
    with timed() as clock:
        for path in _files(folder, "day2"):
            with pa.CompressedInputStream(pa.OSFile(str(path)), "gzip") as stream:
                while chunk := stream.read(4 * 1024 * 1024):
                    total += len(chunk)
    return {"bytes": total, "seconds": clock["seconds"]}


def _report_batches(folder: Path, day: str, stats: Any, clock: dict[str, float] | None = None) -> Iterator[Any]:
    """The day's rows as our reader yields them; `clock["seconds"]` adds up the time spent reading."""
    from ingest_pipelines.inventory.reader import read_data_file
    from ingest_pipelines.testing.inventory_report import CSV_SCHEMA

    for path in _files(folder, day):
        batches = read_data_file(path, "CSV", CSV_SCHEMA, stats, path.name)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            if clock is not None:
                clock["seconds"] = clock.get("seconds", 0.0) + time.perf_counter() - started
            if batch is None:
                break
            yield batch


def variant_prepare_previous(folder: Path) -> dict[str, Any]:
    """Day 1 as a first report (no previous): parsed and diffed by key range, its snapshot kept for day 2."""
    from ingest_pipelines.inventory.diff import diff_inventory
    from ingest_pipelines.inventory.reader import ReadStats

    stats = ReadStats()
    with timed() as clock:
        diff = diff_inventory(_report_batches(folder, "day1", stats), None, folder / "work-day1", folder / "day1.parquet")
    return {
        "rows": diff.rows,
        "seconds": clock["seconds"],
        "key_ranges": diff.key_ranges,
        "snapshot_mib": (folder / "day1.parquet").stat().st_size / 2**20,
    }


def variant_ours(folder: Path) -> dict[str, Any]:
    """Ours: parse day 2 (decode keys, normalize, count malformed), diff it by key range against day 1's
    snapshot (streamed), write the S3BatchOperations_CSV_20180820 manifest of the candidates."""
    import shutil

    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest_batches
    from ingest_pipelines.inventory.diff import diff_inventory
    from ingest_pipelines.inventory.reader import ReadStats

    stats = ReadStats()
    parse_clock: dict[str, float] = {}
    workdir = folder / "work-day2"
    with timed() as clock:
        with timed() as diff_clock:
            diff = diff_inventory(
                _report_batches(folder, "day2", stats, parse_clock),
                folder / "day1.parquet",
                workdir,
                folder / "day2.parquet",
            )
        with timed() as write_clock:
            written = write_batch_manifest_batches("images", diff.candidate_batches(), diff.versioned, folder / "out.csv")
    shutil.rmtree(workdir)
    return {
        "rows": stats.rows,
        "seconds": clock["seconds"],
        "parse_seconds": parse_clock.get("seconds", 0.0),
        "diff_seconds": diff_clock["seconds"] - parse_clock.get("seconds", 0.0),
        "write_seconds": write_clock["seconds"],
        "malformed_rows": stats.malformed_rows,
        "new": diff.new,
        "changed": diff.changed,
        "deleted": diff.deleted,
        "candidates": written,
        "key_ranges": diff.key_ranges,
        "range_rows_max": diff.range_rows_max,
        "spill_mib": diff.spill_bytes / 2**20,
    }


def variant_in_memory(folder: Path) -> dict[str, Any]:
    """For comparison, the previous code path: the whole day-2 report and day 1's key set in memory, one
    diff, the snapshot written from memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest
    from ingest_pipelines.inventory.diff import SNAPSHOT_COLUMNS, diff_reports
    from ingest_pipelines.inventory.reader import ROW_SCHEMA, ReadStats

    stats = ReadStats()
    with timed() as clock:
        current = pa.Table.from_batches(list(_report_batches(folder, "day2", stats)), schema=ROW_SCHEMA)
        previous = pq.read_table(folder / "day1.parquet", columns=SNAPSHOT_COLUMNS)
        diff = diff_reports(current, previous)
        # the old importer wrote the report's snapshot right after the diff
        pq.write_table(current.select(SNAPSHOT_COLUMNS), folder / "day2-in-memory.parquet", compression="zstd")
        written = write_batch_manifest(
            "images", diff.candidates.column("key"), diff.candidates.column("version_id"), folder / "out-in-memory.csv"
        )
    return {
        "rows": stats.rows,
        "seconds": clock["seconds"],
        "new": diff.new,
        "changed": diff.changed,
        "deleted": diff.deleted,
        "candidates": written,
    }


def variant_duckdb_query(folder: Path) -> dict[str, Any]:
    """Baseline: what a user would write instead, DuckDB with its defaults over the two reports: each read
    once, new/changed/deleted by anti-joins, the candidates written as the Batch manifest (the CSV's keys
    are URL-encoded already, so they are compared and written as they are)."""
    import duckdb

    from ingest_pipelines.testing.inventory_report import CSV_SCHEMA

    columns = "{" + ", ".join(f"'{name}': 'VARCHAR'" for name in CSV_SCHEMA) + "}"

    def report(day: str) -> str:
        return (
            f"SELECT * FROM read_csv('{folder / day}/*.csv.gz', header = false, columns = {columns}) "
            "WHERE IsLatest = 'true' AND IsDeleteMarker = 'false'"
        )

    with timed() as clock:
        con = duckdb.connect()
        con.execute(f"CREATE TEMP TABLE cur AS {report('day2')}")
        con.execute(f"CREATE TEMP TABLE prev AS {report('day1')}")
        candidates = con.execute(
            "COPY (SELECT Bucket, Key FROM cur ANTI JOIN prev USING (Key, ETag, Size, LastModifiedDate) "
            r"WHERE regexp_matches(Key, '(?i)\.(png|jpe?g)$') ORDER BY Key) "
            f"TO '{folder / 'out-duckdb-query.csv'}' (HEADER false, QUOTE '')"
        ).fetchone()[0]
        new, different, deleted, rows = con.execute(
            "SELECT (SELECT count(*) FROM cur ANTI JOIN prev USING (Key)), "
            "(SELECT count(*) FROM cur ANTI JOIN prev USING (Key, ETag, Size, LastModifiedDate)), "
            "(SELECT count(*) FROM prev ANTI JOIN cur USING (Key)), (SELECT count(*) FROM cur)"
        ).fetchone()
        con.close()
    return {"rows": rows, "seconds": clock["seconds"], "new": new, "changed": different - new, "deleted": deleted, "candidates": candidates}


def variant_engine_duckdb(folder: Path) -> dict[str, Any]:
    """Engine considered: DuckDB inside the product. Our reader (URL decoding, malformed rows) streams
    into a DuckDB table on local disk with `memory_limit` set and spilling to the work folder; the join with
    the previous snapshot, the candidates (to our manifest writer) and the sorted snapshot are DuckDB's."""
    import duckdb
    import pyarrow as pa

    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest_batches
    from ingest_pipelines.inventory.reader import ROW_SCHEMA, ReadStats

    stats = ReadStats()
    work = folder / "work-engine-duckdb"
    work.mkdir(exist_ok=True)
    previous = folder / "day1.parquet"
    with timed() as clock:
        con = duckdb.connect(str(work / "diff.duckdb"))
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
        con.execute(f"SET temp_directory = '{work / 'spill'}'")
        con.execute("SET preserve_insertion_order = false")
        report = pa.RecordBatchReader.from_batches(ROW_SCHEMA, _report_batches(folder, "day2", stats))
        con.register("report", report)
        con.execute("CREATE TABLE cur AS SELECT * FROM report")
        con.execute(
            "CREATE TABLE joined AS SELECT c.key, c.version_id, c.etag, c.size, p.key IS NULL AS is_new, "
            "p.key IS NOT NULL AND p.fingerprint <> c.fingerprint AS is_changed "
            f"FROM cur c LEFT JOIN read_parquet('{previous}') p ON c.key = p.key"
        )
        new, changed, matched = con.execute(
            "SELECT count(*) FILTER (WHERE is_new), count(*) FILTER (WHERE is_changed), count(*) FILTER (WHERE NOT is_new) FROM joined"
        ).fetchone()
        previous_rows = con.execute(f"SELECT count(*) FROM read_parquet('{previous}')").fetchone()[0]
        candidates = con.execute(
            "SELECT key, version_id, etag, size FROM joined WHERE (is_new OR is_changed) "
            r"AND regexp_matches(key, '(?i)\.(png|jpe?g)$') ORDER BY key"
        ).to_arrow_reader(65536)
        written = write_batch_manifest_batches("images", candidates, False, folder / "out-engine-duckdb.csv")
        con.execute(
            f"COPY (SELECT key, fingerprint FROM cur ORDER BY key) TO '{work / 'snapshot.parquet'}' (FORMAT parquet, COMPRESSION zstd)"
        )
        con.close()
    return {
        "rows": stats.rows,
        "seconds": clock["seconds"],
        "new": new,
        "changed": changed,
        "deleted": previous_rows - matched,
        "candidates": written,
    }


def variant_engine_acero(folder: Path) -> dict[str, Any]:
    """Engine considered: a streamed pyarrow hash join (Acero): the report streams through a full outer
    hash join whose build side is the previous snapshot; the report's key set is kept to write the sorted
    snapshot. Both the hash table and that key set grow with the report."""
    import pyarrow as pa
    import pyarrow.acero as acero
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest_batches
    from ingest_pipelines.inventory.diff import SNAPSHOT_COLUMNS, SNAPSHOT_PARQUET
    from ingest_pipelines.inventory.reader import ROW_SCHEMA, ReadStats
    from ingest_pipelines.inventory.tags import IMAGE_KEY_PATTERN

    stats = ReadStats()
    with timed() as clock:
        previous = pq.read_table(folder / "day1.parquet", columns=SNAPSHOT_COLUMNS).rename_columns(["prev_key", "prev_fingerprint"])
        report = pa.RecordBatchReader.from_batches(ROW_SCHEMA, _report_batches(folder, "day2", stats))
        join = acero.Declaration(
            "hashjoin",
            acero.HashJoinNodeOptions("full outer", left_keys=["key"], right_keys=["prev_key"]),
            inputs=[
                acero.Declaration("record_batch_reader_source", acero.RecordBatchReaderSourceNodeOptions(report)),
                acero.Declaration("table_source", acero.TableSourceNodeOptions(previous)),
            ],
        )
        new = changed = deleted = 0
        snapshot_parts, candidate_parts = [], []
        for batch in join.to_reader():
            here = batch.column("key").is_valid()
            before = batch.column("prev_key").is_valid()
            deleted += pc.sum(pc.invert(here)).as_py() or 0
            is_new = pc.and_(here, pc.invert(before))
            is_changed = pc.fill_null(
                pc.and_(pc.and_(here, before), pc.not_equal(batch.column("fingerprint"), batch.column("prev_fingerprint"))), False
            )
            new += pc.sum(is_new).as_py() or 0
            changed += pc.sum(is_changed).as_py() or 0
            current = batch.filter(here)
            snapshot_parts.append(current.select(SNAPSHOT_COLUMNS))
            wanted = pc.and_(
                pc.or_(is_new, is_changed), pc.fill_null(pc.match_substring_regex(batch.column("key"), IMAGE_KEY_PATTERN), False)
            )
            candidate_parts.append(batch.filter(wanted).select(["key", "version_id"]))
        snapshot = pa.Table.from_batches(snapshot_parts)
        pq.write_table(snapshot.take(pc.sort_indices(snapshot.column("key"))), folder / "day2-acero.parquet", **SNAPSHOT_PARQUET)
        candidates = pa.Table.from_batches(candidate_parts).sort_by("key")
        written = write_batch_manifest_batches("images", candidates.to_batches(), False, folder / "out-acero.csv")
    return {"rows": stats.rows, "seconds": clock["seconds"], "new": new, "changed": changed, "deleted": deleted, "candidates": written}


def variant_engine_sampled(folder: Path) -> dict[str, Any]:
    """Engine considered: the key-range diff with the ranges cut by a sample of the report's own keys (how
    every report was diffed before this change, and still the first one and old unsorted snapshots): the
    report is spilled whole, then it and the previous snapshot are split, then diffed range by range."""
    from ingest_pipelines.inventory import diff
    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest_batches
    from ingest_pipelines.inventory.reader import ReadStats

    stats = ReadStats()
    work = folder / "work-sampled"
    work.mkdir(exist_ok=True)
    with timed() as clock:
        # diff_inventory with the sorted-snapshot path left out (private pieces: benchmark only)
        with (
            diff._DiffOutput(work / "candidates.arrow", folder / "day2-sampled.parquet") as out,
            diff.prefetched(_report_batches(folder, "day2", stats), diff.PREFETCH_BATCHES, diff.release_memory) as current,
        ):
            spill = diff.PreviousSpill.write(
                diff.ReportSnapshots.batches(folder / "day1.parquet"), work / "previous.arrow", diff.PARTITION_ROWS
            )
            out.result.previous_rows = spill.rows
            diff._diff_sampled(current, spill.batches(), work / "sampled", out, diff.PARTITION_ROWS)
        result = out.result
        written = write_batch_manifest_batches("images", result.candidate_batches(), result.versioned, folder / "out-sampled.csv")
    return {
        "rows": stats.rows,
        "seconds": clock["seconds"],
        "new": result.new,
        "changed": result.changed,
        "deleted": result.deleted,
        "candidates": written,
    }


def variant_idle(folder: Path) -> dict[str, Any]:
    """Peak memory of the interpreter with pyarrow and our modules imported, doing nothing."""
    import pyarrow.csv  # noqa: F401

    import ingest_pipelines.inventory.diff
    import ingest_pipelines.inventory.reader  # noqa: F401

    return {}


def variant_generate(folder: Path) -> dict[str, Any]:
    return generate(folder, int((folder / "rows").read_text()))


VARIANTS = {
    "generate": variant_generate,
    "idle": variant_idle,
    "prepare_previous": variant_prepare_previous,
    "ours": variant_ours,
    "duckdb_query": variant_duckdb_query,
    "pyarrow_read": variant_pyarrow_read,
    "pyarrow_read_jemalloc": variant_pyarrow_read,
    "gunzip": variant_gunzip,
    "engine_duckdb": variant_engine_duckdb,
    "engine_acero": variant_engine_acero,
    "engine_sampled": variant_engine_sampled,
    "in_memory": variant_in_memory,
}
#: run every round, interleaved; the others once per size
TIMED = (
    "ours",
    "duckdb_query",
    "pyarrow_read",
    "pyarrow_read_jemalloc",
    "engine_duckdb",
    "engine_acero",
    "engine_sampled",
    "in_memory",
    "gunzip",
)
#: hold a whole report in memory: not run above IN_MEMORY_MAX_ROWS
WHOLE_REPORT = ("engine_acero", "in_memory")
#: produce a diff: their counts must agree with ours
DIFFS = ("duckdb_query", "engine_duckdb", "engine_acero", "engine_sampled", "in_memory")
LABELS = {
    "duckdb_query": "the same diff as one DuckDB query (2 reports)",
    "pyarrow_read": "pyarrow.csv.read_csv (parse only)",
    "pyarrow_read_jemalloc": "read_csv on jemalloc, as ours (parse only)",
    "gunzip": "gzip decompression only (rows/s equiv.)",
    "engine_duckdb": "engine: DuckDB inside (memory_limit, spill)",
    "engine_acero": "engine: Acero streamed hash join",
    "engine_sampled": "engine: key ranges sampled from the report",
    "in_memory": "all in memory (the code before key ranges)",
}
PEAK_ROWS = (
    "idle",
    "ours",
    "prepare_previous",
    "duckdb_query",
    "pyarrow_read",
    "pyarrow_read_jemalloc",
    "gunzip",
    "engine_duckdb",
    "engine_acero",
    "engine_sampled",
    "in_memory",
)


def peak_rss_of_this_process_mib() -> float:
    """VmHWM: the peak resident size of this process image. ru_maxrss is kept across exec on Linux, so
    a child started from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


#: the environment of a variant's process: the bare `read_csv` on the pool ingest_pipelines chooses (ours and the
#: engines run on it; the other baselines on pyarrow's default, mimalloc)
VARIANT_ENV = {"pyarrow_read_jemalloc": {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}}
#: variants that run our reader: where pandas is installed (ingest_pipelines does not need it) pyarrow imports
#: it the first time it converts a Python value (`pa.scalar("")`, 0.3-0.7 s and ~40 MiB here), once per process;
#: done before the clock starts, as in a long-lived process, so small reports measure the throughput
READER_VARIANTS = ("ours", "prepare_previous", "engine_duckdb", "engine_acero", "engine_sampled", "in_memory")


def _child(variant: str, folder: Path) -> dict[str, Any]:
    if variant in READER_VARIANTS:
        # imported before pyarrow, as in the code location's processes: it chooses Arrow's memory pool
        importlib.import_module("ingest_pipelines")
    os.environ.update(VARIANT_ENV.get(variant, {}))
    import pyarrow as pa

    if variant in READER_VARIANTS:
        pa.scalar("")
    result = VARIANTS[variant](folder)
    result["peak_rss_mib"] = peak_rss_of_this_process_mib()
    result["memory_pool"] = pa.default_memory_pool().backend_name
    return result


def _clean(folder: Path) -> None:
    """Remove what a variant left (outputs, work folders) so the next one starts from the same disk."""
    import shutil

    for path in folder.iterdir():
        if path.name.startswith(("work-", "out", "day2-")) or path.name == "day2.parquet":
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def variant_environment() -> dict[str, str]:
    """The environment of a variant's process: this one's, without the Arrow pool that importing ingest_pipelines
    put there (`make bench` imports it for the other benchmarks first): each variant chooses its pool itself
    (`_child`), so the baselines run on pyarrow's default. A pool the user set stays, for every variant."""
    env = dict(os.environ)
    package = sys.modules.get("ingest_pipelines")
    if package is not None and getattr(package, "ARROW_POOL_SET_HERE", False):
        env.pop("ARROW_DEFAULT_MEMORY_POOL", None)
    return env


def run_variant(variant: str, folder: Path, may_fail: bool = False) -> dict[str, Any]:
    """One variant in its own process. `may_fail`: an engine that fails (DuckDB out of its memory limit)
    is a result too: its error is returned instead of ending the benchmark."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_inventory", "--variant", variant, "--dir", str(folder)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        env=variant_environment(),
    )
    _clean(folder)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no output"]
        # the exception's own line (DuckDB's message runs on with advice lines)
        error = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1])[:300]
        if not may_fail:
            raise RuntimeError(f"{variant} failed: {done.stderr[-3000:]}")
        print(f"  {variant} failed: {error}", flush=True)
        return {"error": error}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rate(result: dict[str, Any], rows: int) -> float:
    return (result.get("rows") or rows) / result["seconds"]


def measure(rows: int, folder: Path, repeat: int) -> dict[str, Any]:
    """Every variant on reports of `rows` rows: day 1 and day 2 generated, day 1's snapshot prepared, then
    the timed variants `repeat` times in rotating order, each in its own process."""
    (folder / "rows").write_text(str(rows))
    with timed() as gen:
        info = run_variant("generate", folder)
    print(
        f"{rows:,} rows: 2 reports ({FILES} gzip CSV files each, day 2 {info['day2_gzip_mib']:.1f} MiB) generated in {gen['seconds']:.1f}s",
        flush=True,
    )
    # prepare_previous first: the diffs run against its snapshot
    results: dict[str, list[dict[str, Any]]] = {
        "prepare_previous": [run_variant("prepare_previous", folder)],
        "idle": [run_variant("idle", folder)],
    }
    timed_names = [name for name in TIMED if rows <= IN_MEMORY_MAX_ROWS or name not in WHOLE_REPORT]
    for round_ in range(repeat):
        shift = round_ % len(timed_names)
        for name in timed_names[shift:] + timed_names[:shift]:
            results.setdefault(name, []).append(run_variant(name, folder, may_fail=name.startswith("engine_")))
    failed = {name for name, runs in results.items() if any("error" in run for run in runs)}
    results = {name: runs for name, runs in results.items() if name not in failed} | {
        name: [run for run in results[name] if "error" in run][:1] for name in failed
    }
    ours = results["ours"][0]
    for name in DIFFS:
        for other in results.get(name, []) if name not in failed else []:
            assert (ours["new"], ours["changed"], ours["deleted"], ours["candidates"]) == (
                other["new"],
                other["changed"],
                other["deleted"],
                other["candidates"],
            ), f"{name} and ours disagree: {other} vs {ours}"
    print(
        f"day 2: {ours['rows']:,} rows, {ours['new']:,} new, {ours['changed']:,} changed, {ours['deleted']:,} deleted, "
        f"{ours['candidates']:,} candidates written; {ours['key_ranges']} key range(s) of at most {ours['range_rows_max']:,} rows, "
        f"{ours['spill_mib']:.0f} MiB spilled; parse {ours['parse_seconds']:.2f}s (its own thread), diff {ours['diff_seconds']:.2f}s, "
        f"manifest {ours['write_seconds']:.2f}s"
    )
    rates = {
        name: [_rate(result, info["day2_rows"]) for result in runs]
        for name, runs in results.items()
        if name in TIMED and name not in failed
    }
    # ratios per round (ours and the baseline measured minutes apart at most), then the median
    ratios = {
        name: statistics.median(ours_rate / rate for ours_rate, rate in zip(rates["ours"], rates[name], strict=True))
        for name in rates
        if name != "ours"
    }
    print(f"inventory rows/s: parse + diff + Batch manifest, median of {repeat} interleaved round(s) (higher is better)")
    print(f"  {'ours (parse + diff by key range + manifest)':<48} {statistics.median(rates['ours']):>12,.0f}")
    for name in rates:
        if name != "ours":
            print(f"  {LABELS[name]:<48} {statistics.median(rates[name]):>12,.0f}   ours/baseline = {ratios[name]:.2f}")
    for name in sorted(failed):
        print(f"  {LABELS[name]:<48} {'failed':>12}   {results[name][0]['error']}")
    return {
        "info": info,
        "results": results,
        "rows_per_second": {name: statistics.median(values) for name, values in rates.items()},
        "ratios": ratios,
        "peak_rss_mib": {name: max(result["peak_rss_mib"] for result in runs) for name, runs in results.items() if name not in failed},
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench_inventory")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--dir")
    # `python -m benchmarks --big` adds the 10,000,000-row report
    sizes = (*SIZES, 10_000_000) if os.environ.get("BENCH_BIG") == "1" else SIZES
    parser.add_argument(
        "--rows", default=",".join(str(size) for size in sizes), help="report sizes, comma-separated (10000000: ~10 min, 2 GB of disk)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds of the timed variants; medians are reported")
    args = parser.parse_args(argv)
    if args.variant:
        return _child(args.variant, Path(args.dir))

    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    sizes = [int(size) for size in args.rows.split(",")]
    measured: dict[int, dict[str, Any]] = {}
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
            measured[rows] = measure(rows, Path(tmp), args.repeat)
    print("peak memory (MiB, VmHWM of each variant's own process, the highest of its rounds)")
    print(f"  {'':<40}" + "".join(f"{f'{rows:,} rows':>16}" for rows in sizes))
    for name in PEAK_ROWS:
        cells = [measured[rows]["peak_rss_mib"].get(name) for rows in sizes]
        print(f"  {name:<40}" + "".join(f"{cell:>16.0f}" if cell is not None else f"{'-':>16}" for cell in cells))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return {"sizes": {str(rows): result for rows, result in measured.items()}}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--variant" in sys.argv:
        print(json.dumps(result))
