"""The inventory benchmark's variants on a small report: every engine runs and all diffs agree (the
benchmark reports an engine that fails instead of stopping, so a broken one would only show as `failed`); each
variant's process allocates from the Arrow pool it is meant to."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ingest_pipelines
from benchmarks import bench_inventory


def test_every_diff_variant_runs_and_agrees_with_ours(tmp_path: Path) -> None:
    rows = 3_000
    bench_inventory.generate(tmp_path, rows)
    prepared = bench_inventory.VARIANTS["prepare_previous"](tmp_path)
    assert prepared["rows"] == rows
    ours = bench_inventory.VARIANTS["ours"](tmp_path)
    # the generator's day 2: 1% of day 1 deleted, 1% new, every 20th of day 1's rows changed
    assert (ours["rows"], ours["new"], ours["deleted"]) == (rows, rows // 100, rows // 100)
    assert ours["changed"] == len([i for i in range(rows // 100, rows) if i % 20 == 0])
    # candidates: the new and changed images (odd ids are .jpg)
    assert ours["candidates"] == len([i for i in range(rows // 100, rows + rows // 100) if i % 2 and (i >= rows or i % 20 == 0)])
    for name in bench_inventory.DIFFS:
        other = bench_inventory.VARIANTS[name](tmp_path)
        assert (other["new"], other["changed"], other["deleted"], other["candidates"]) == (
            ours["new"],
            ours["changed"],
            ours["deleted"],
            ours["candidates"],
        ), name


def _bare_pyarrow_pool() -> str:
    environment = {name: value for name, value in os.environ.items() if name != "ARROW_DEFAULT_MEMORY_POOL"}
    probe = "import pyarrow as pa; pa.array([1]); print(pa.default_memory_pool().backend_name)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, check=True).stdout.strip()


def _pools(folder: Path) -> dict[str, str]:
    return {name: bench_inventory.run_variant(name, folder)["memory_pool"] for name in ("pyarrow_read", "pyarrow_read_jemalloc", "ours")}


def test_the_baseline_reads_on_pyarrows_pool_though_the_benchmark_imported_the_package(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "rows").write_text("2000")
    bench_inventory.run_variant("generate", tmp_path)
    bench_inventory.run_variant("prepare_previous", tmp_path)
    # `make bench` imports ingest_pipelines (the other benchmarks) before it starts the inventory's variants:
    # the pool that import put into the environment must not reach the bare read_csv's process
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    monkeypatch.setattr(ingest_pipelines, "ARROW_POOL_SET_HERE", True)
    assert _pools(tmp_path) == {"pyarrow_read": _bare_pyarrow_pool(), "pyarrow_read_jemalloc": "jemalloc", "ours": "jemalloc"}
    # a pool the user chose is every variant's
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
    monkeypatch.setattr(ingest_pipelines, "ARROW_POOL_SET_HERE", False)
    assert _pools(tmp_path) == {"pyarrow_read": "system", "pyarrow_read_jemalloc": "jemalloc", "ours": "system"}
