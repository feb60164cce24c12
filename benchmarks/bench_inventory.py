"""Inventory parsing, diff and Batch Operations manifest for gzip CSV reports of two sizes (250,000 and
1,000,000 rows), against pyarrow's own CSV read; each variant runs in its own process for its peak memory."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import print_ratios, timed

#: report sizes (rows) measured side by side: peak memory of the streamed diff must not grow with them
SIZES = (250_000, 1_000_000)
FILES = 4
#: day 2 differs from day 1 by this share of changed, new and deleted rows
CHANGED, NEW, DELETED = 0.05, 0.01, 0.01


def _key(i: int) -> str:
    # one key in ten has a space (URL-encoded as '+'), one in two is an image
    return f"faces/{i % 997:03d}/{'face ' if i % 10 == 0 else ''}{i:08d}.{'jpg' if i % 2 else 'txt'}"


def _etag(i: int, day: int, rows: int) -> str:
    changed = day == 2 and i < rows and i % int(1 / CHANGED) == 0
    return f"{i:031x}{'f' if changed else '0'}"


def generate(folder: Path, rows: int) -> dict[str, Any]:
    """Day 1 and day 2 reports as S3 Inventory gzip CSV files (no header, quoted, keys URL-encoded)."""
    import pyarrow as pa

    from ingest_pipelines.testing.inventory_report import csv_gzip_bytes

    def table(ids: list[int], day: int) -> pa.Table:
        n = len(ids)
        return pa.table(
            {
                "bucket": pa.array(["images"] * n),
                "key": pa.array([_key(i) for i in ids]),
                "version_id": pa.nulls(n, pa.string()),
                "is_latest": pa.array([True] * n),
                "is_delete_marker": pa.array([False] * n),
                "size": pa.array(ids, pa.int64()),
                "last_modified_date": pa.array([1714521600000] * n, pa.timestamp("ms", tz="UTC")),
                "e_tag": pa.array([_etag(i, day, rows) for i in ids]),
                "storage_class": pa.array(["STANDARD"] * n),
            }
        )

    deleted, new = int(rows * DELETED), int(rows * NEW)
    days = {"day1": table(list(range(rows)), 1), "day2": table([*range(deleted, rows), *range(rows, rows + new)], 2)}
    for name, data in days.items():
        (folder / name).mkdir()
        per_file = -(-data.num_rows // FILES)
        for index in range(FILES):
            (folder / name / f"part-{index}.csv.gz").write_bytes(csv_gzip_bytes(data.slice(index * per_file, per_file)))
    return {"day2_rows": days["day2"].num_rows, "day2_gzip_mib": sum(p.stat().st_size for p in (folder / "day2").iterdir()) / 2**20}


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
    from ingest_pipelines.inventory.diff import ReportSnapshots, diff_inventory
    from ingest_pipelines.inventory.reader import ReadStats

    stats = ReadStats()
    parse_clock: dict[str, float] = {}
    workdir = folder / "work-day2"
    with timed() as clock:
        with timed() as diff_clock:
            diff = diff_inventory(
                _report_batches(folder, "day2", stats, parse_clock),
                ReportSnapshots.batches(folder / "day1.parquet"),
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
    "pyarrow_read": variant_pyarrow_read,
    "gunzip": variant_gunzip,
    "ours": variant_ours,
    "in_memory": variant_in_memory,
}
#: peak memory rows of the table, in this order
PEAK_ROWS = ("idle", "pyarrow_read", "gunzip", "ours", "prepare_previous", "in_memory")


def peak_rss_of_this_process_mib() -> float:
    """VmHWM: the peak resident size of this process image. ru_maxrss is kept across exec on Linux, so
    a child started from a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(variant: str, folder: Path) -> dict[str, Any]:
    result = VARIANTS[variant](folder)
    result["peak_rss_mib"] = peak_rss_of_this_process_mib()
    return result


def run_variant(variant: str, folder: Path) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_inventory", "--variant", variant, "--dir", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(rows: int, folder: Path) -> dict[str, Any]:
    """Every variant on reports of `rows` rows: day 1 and day 2 generated, then each variant in a process."""
    (folder / "rows").write_text(str(rows))
    with timed() as gen:
        info = run_variant("generate", folder)
    print(
        f"{rows:,} rows: 2 reports ({FILES} gzip CSV files each, day 2 {info['day2_gzip_mib']:.1f} MiB) generated in {gen['seconds']:.1f}s"
    )
    # prepare_previous first: ours and in_memory diff against its snapshot
    order = ["prepare_previous", *(name for name in VARIANTS if name not in ("generate", "prepare_previous"))]
    results = {name: run_variant(name, folder) for name in order}
    ours, base, gunzip, in_memory = results["ours"], results["pyarrow_read"], results["gunzip"], results["in_memory"]
    assert (ours["new"], ours["changed"], ours["deleted"], ours["candidates"]) == (
        in_memory["new"],
        in_memory["changed"],
        in_memory["deleted"],
        in_memory["candidates"],
    ), "the streamed diff and the in-memory diff disagree"
    ours_rate = ours["rows"] / ours["seconds"]
    base_rate = base["rows"] / base["seconds"]
    gunzip_rate = info["day2_rows"] / gunzip["seconds"]
    print(
        f"day 2: {ours['rows']:,} rows, {ours['new']:,} new, {ours['changed']:,} changed, {ours['deleted']:,} deleted, "
        f"{ours['candidates']:,} candidates written; {ours['key_ranges']} key range(s) of at most {ours['range_rows_max']:,} rows, "
        f"{ours['spill_mib']:.0f} MiB spilled; parse {ours['parse_seconds']:.2f}s, spill + diff {ours['diff_seconds']:.2f}s, "
        f"manifest {ours['write_seconds']:.2f}s"
    )
    ratios = print_ratios(
        "inventory rows/s: parse + diff + Batch manifest vs reading the same files",
        "rows/s",
        ("ours (parse + diff by key range + manifest)", ours_rate),
        [
            ("pyarrow.csv.read_csv (parse only)", base_rate),
            ("gzip decompression only (rows/s equiv.)", gunzip_rate),
            ("previous code path (all in memory)", in_memory["rows"] / in_memory["seconds"]),
        ],
    )
    return {
        "info": info,
        "results": results,
        "rows_per_second": {"ours": ours_rate, "pyarrow_read": base_rate, "gunzip": gunzip_rate},
        "ratios": ratios,
    }


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench_inventory")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--dir")
    parser.add_argument("--rows", default=",".join(str(size) for size in SIZES), help="report sizes, comma-separated")
    args = parser.parse_args(argv)
    if args.variant:
        return _child(args.variant, Path(args.dir))

    sizes = [int(size) for size in args.rows.split(",")]
    measured: dict[int, dict[str, Any]] = {}
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
            measured[rows] = measure(rows, Path(tmp))
    print("peak memory (MiB, each variant in its own process)")
    print(f"  {'':<40}" + "".join(f"{f'{rows:,} rows':>16}" for rows in sizes))
    for name in PEAK_ROWS:
        print(f"  {name:<40}" + "".join(f"{measured[rows]['results'][name]['peak_rss_mib']:>16.0f}" for rows in sizes))
    return {"sizes": {str(rows): result for rows, result in measured.items()}}


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--variant" in sys.argv:
        print(json.dumps(result))
