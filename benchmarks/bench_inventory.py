"""Inventory parsing, diff and Batch Operations manifest for a 1,000,000-row gzip CSV report, against
pyarrow's own CSV read of the same files; each variant runs in its own process for its peak memory."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import print_ratios, timed

ROWS = 1_000_000
FILES = 4
#: day 2 differs from day 1 by this share of changed, new and deleted rows
CHANGED, NEW, DELETED = 0.05, 0.01, 0.01


def _key(i: int) -> str:
    # one key in ten has a space (URL-encoded as '+'), one in two is an image
    return f"faces/{i % 997:03d}/{'face ' if i % 10 == 0 else ''}{i:08d}.{'jpg' if i % 2 else 'txt'}"


def _etag(i: int, day: int) -> str:
    changed = day == 2 and i < ROWS and i % int(1 / CHANGED) == 0
    return f"{i:031x}{'f' if changed else '0'}"


def generate(folder: Path) -> dict[str, Any]:
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
                "e_tag": pa.array([_etag(i, day) for i in ids]),
                "storage_class": pa.array(["STANDARD"] * n),
            }
        )

    deleted, new = int(ROWS * DELETED), int(ROWS * NEW)
    days = {"day1": table(list(range(ROWS)), 1), "day2": table([*range(deleted, ROWS), *range(ROWS, ROWS + new)], 2)}
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


def _read_report(folder: Path, day: str):
    import pyarrow as pa

    from ingest_pipelines.inventory.reader import ROW_SCHEMA, ReadStats, read_data_file
    from ingest_pipelines.testing.inventory_report import CSV_SCHEMA

    stats = ReadStats()
    batches = [batch for path in _files(folder, day) for batch in read_data_file(path, "CSV", CSV_SCHEMA, stats, path.name)]
    return pa.Table.from_batches(batches, schema=ROW_SCHEMA), stats


def variant_prepare_previous(folder: Path) -> dict[str, Any]:
    """Not timed against anything: day 1 parsed and kept as the snapshot the day-2 diff reads."""
    import pyarrow.parquet as pq

    from ingest_pipelines.inventory.diff import SNAPSHOT_COLUMNS

    table, _ = _read_report(folder, "day1")
    pq.write_table(table.select(SNAPSHOT_COLUMNS), folder / "day1.parquet", compression="zstd")
    return {"rows": table.num_rows, "snapshot_mib": (folder / "day1.parquet").stat().st_size / 2**20}


def variant_ours(folder: Path) -> dict[str, Any]:
    """Ours: parse day 2 (decode keys, normalize, count malformed), diff against day 1's snapshot,
    write the S3BatchOperations_CSV_20180820 manifest of the candidates."""
    import pyarrow.parquet as pq

    from ingest_pipelines.inventory.batch_manifest import write_batch_manifest
    from ingest_pipelines.inventory.diff import SNAPSHOT_COLUMNS, diff_reports

    with timed() as clock:
        with timed() as parse_clock:
            current, stats = _read_report(folder, "day2")
        previous = pq.read_table(folder / "day1.parquet", columns=SNAPSHOT_COLUMNS)
        with timed() as diff_clock:
            diff = diff_reports(current, previous)
        with timed() as write_clock:
            written = write_batch_manifest(
                "images", diff.candidates.column("key"), diff.candidates.column("version_id"), folder / "out.csv"
            )
    return {
        "rows": stats.rows,
        "seconds": clock["seconds"],
        "diff_seconds": diff_clock["seconds"],
        "write_seconds": write_clock["seconds"],
        "malformed_rows": stats.malformed_rows,
        "new": diff.new,
        "changed": diff.changed,
        "deleted": diff.deleted,
        "candidates": written,
        "parse_seconds": parse_clock["seconds"],
    }


def variant_idle(folder: Path) -> dict[str, Any]:
    """Peak memory of the interpreter with pyarrow and our modules imported, doing nothing."""
    import pyarrow.csv  # noqa: F401

    import ingest_pipelines.inventory.diff
    import ingest_pipelines.inventory.reader  # noqa: F401

    return {}


def variant_generate(folder: Path) -> dict[str, Any]:
    return generate(folder)


VARIANTS = {
    "generate": variant_generate,
    "idle": variant_idle,
    "prepare_previous": variant_prepare_previous,
    "pyarrow_read": variant_pyarrow_read,
    "gunzip": variant_gunzip,
    "ours": variant_ours,
}


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


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="bench_inventory")
    parser.add_argument("--variant", choices=sorted(VARIANTS))
    parser.add_argument("--dir")
    args = parser.parse_args(argv)
    if args.variant:
        return _child(args.variant, Path(args.dir))

    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        folder = Path(tmp)
        with timed() as gen:
            info = run_variant("generate", folder)
        print(
            f"generated 2 reports of ~{ROWS:,} rows ({FILES} gzip CSV files each, day 2 {info['day2_gzip_mib']:.1f} MiB) in {gen['seconds']:.1f}s"
        )
        results = {name: run_variant(name, folder) for name in VARIANTS if name != "generate"}
    ours, base, gunzip = results["ours"], results["pyarrow_read"], results["gunzip"]
    ours_rate = ours["rows"] / ours["seconds"]
    base_rate = base["rows"] / base["seconds"]
    gunzip_rate = info["day2_rows"] / gunzip["seconds"]
    print(
        f"day 2: {ours['rows']:,} rows, {ours['new']:,} new, {ours['changed']:,} changed, {ours['deleted']:,} deleted, "
        f"{ours['candidates']:,} candidates written; parse {ours['parse_seconds']:.2f}s, diff {ours['diff_seconds']:.2f}s, manifest {ours['write_seconds']:.2f}s"
    )
    ratios = print_ratios(
        "inventory rows/s: parse + diff + Batch manifest vs reading the same files",
        "rows/s",
        ("ours (parse + diff + manifest)", ours_rate),
        [("pyarrow.csv.read_csv (parse only)", base_rate), ("gzip decompression only (rows/s equiv.)", gunzip_rate)],
    )
    print("peak memory (MiB, each variant in its own process)")
    for name in ("idle", "pyarrow_read", "gunzip", "ours", "prepare_previous"):
        print(f"  {name:<40} {results[name]['peak_rss_mib']:>10.0f}")
    print(
        f"gzip decompression: {gunzip['bytes'] / gunzip['seconds'] / 2**20:.0f} MiB/s of CSV out, {info['day2_gzip_mib'] / gunzip['seconds']:.0f} MiB/s in"
    )
    return {
        "info": info,
        "results": results,
        "rows_per_second": {"ours": ours_rate, "pyarrow_read": base_rate, "gunzip": gunzip_rate},
        "ratios": ratios,
    }


if __name__ == "__main__":
    result = main(sys.argv[1:])
    if "--variant" in sys.argv:
        print(json.dumps(result))
