"""The inventory benchmark's variants on a small report: every engine runs and all diffs agree (the
benchmark reports an engine that fails instead of stopping, so a broken one would only show as `failed`)."""

from __future__ import annotations

from pathlib import Path

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
