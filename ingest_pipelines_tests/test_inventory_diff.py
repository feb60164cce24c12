"""The columnar diff of a report against the previous one (in memory, and streamed by key range with
spill files), and the snapshots that carry it across days."""

from __future__ import annotations

import bisect
import collections
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.inventory import diff as diff_module
from ingest_pipelines.inventory.batch_manifest import write_batch_manifest_batches
from ingest_pipelines.inventory.diff import (
    InventoryDiffResult,
    KeySample,
    ReportSnapshots,
    diff_inventory,
    diff_reports,
    split_by_key_range,
)
from ingest_pipelines.inventory.manifest import ReportRef
from ingest_pipelines.inventory.reader import ROW_SCHEMA
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import open_store


def report(rows: list[tuple[str, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"key": k, "version_id": None, "etag": e, "size": 1, "fingerprint": f"{e}|1|t"} for k, e in rows],
        schema=ROW_SCHEMA,
    )


def test_first_report_makes_every_image_a_candidate() -> None:
    diff = diff_reports(report([("b.jpg", "1"), ("a.PNG", "1"), ("c.jpeg", "1"), ("d.gif", "1")]), None)
    assert diff.candidates.column("key").to_pylist() == ["a.PNG", "b.jpg", "c.jpeg"]
    assert (diff.new, diff.changed, diff.unchanged, diff.deleted, diff.not_images) == (4, 0, 0, 0, 1)


def test_new_changed_unchanged_deleted() -> None:
    previous = report([("same.png", "1"), ("edit.png", "1"), ("gone.png", "1"), ("same.txt", "1")])
    current = report([("same.png", "1"), ("edit.png", "2"), ("new.jpg", "1"), ("same.txt", "1"), ("new.txt", "1")])
    diff = diff_reports(current, previous.select(["key", "fingerprint"]))
    assert diff.candidates.column("key").to_pylist() == ["edit.png", "new.jpg"]
    assert (diff.new, diff.changed, diff.unchanged, diff.deleted, diff.not_images) == (2, 1, 2, 1, 1)


def test_snapshots_pick_the_latest_older_report(tmp_path: Path) -> None:
    snapshots = ReportSnapshots(StateStore(open_store(FilesystemStoreConfig(name="s", path=str(tmp_path)))), "wf")
    day = {d: ReportRef(f"inv/images/daily/2024-05-0{d}T01-00Z/", "images", "daily", f"2024-05-0{d}T01-00Z") for d in (1, 2, 3)}
    assert snapshots.previous(day[2]) is None
    snapshots.save(day[1], report([("a.png", "1")]))
    snapshots.save(day[3], report([("a.png", "3")]))
    # a backfill of day 2 diffs against day 1, not against the newer day 3
    assert snapshots.previous(day[2]) == "2024-05-01T01-00Z"
    assert snapshots.load(day[2], "2024-05-01T01-00Z").column("fingerprint").to_pylist() == ["1|1|t"]


# --------------------------------------------------------------------------- the streamed diff, by key range


def snapshot_rows(table: pa.Table) -> list[tuple[str, str]]:
    return list(zip(table.column("key").to_pylist(), table.column("fingerprint").to_pylist(), strict=True))


def assert_snapshot_layout(path: Path, partition_rows: int) -> list[str]:
    """The layout the next day's diff reads in place: the key ranges named in the file's metadata hold
    consecutive rows of the file, in key order, none over RECUT_RANGE x `partition_rows` rows (the rows
    within a range in any order). Returns the boundaries."""
    parquet = pq.ParquetFile(path)
    ranges = json.loads(parquet.metadata.metadata[diff_module.SNAPSHOT_RANGES_KEY.encode()])
    boundaries = ranges["boundaries"]
    assert ranges["partitionRows"] == partition_rows and boundaries == sorted(set(boundaries))
    indexes = [bisect.bisect_right(boundaries, key) for key in parquet.read().column("key").to_pylist()]
    assert indexes == sorted(indexes), "a key range's rows are not together"
    sizes = collections.Counter(indexes)
    assert max(sizes.values()) <= diff_module.RECUT_RANGE * partition_rows
    return boundaries


def batches_of(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return [batch for start in range(0, table.num_rows, size) for batch in table.slice(start, size).to_batches()]


def two_days(seed: int = 7) -> tuple[pa.Table, pa.Table]:
    """Day 1: 3,000 keys (images and not, ASCII and not); day 2: 300 deleted, 200 changed, 400 new, shuffled."""
    rng = random.Random(seed)
    names = [
        f"{prefix}{i:05d}.{ext}"
        for i, (prefix, ext) in enumerate(
            (rng.choice(["a/", "é/", "z/😀", "Z/"]), rng.choice(["png", "JPG", "txt", "jpeg"])) for _ in range(3400)
        )
    ]
    day1 = [(name, "1") for name in names[:3000]]
    day2 = [(name, "2" if 300 <= i < 500 else "1") for i, name in enumerate(names[300:3000], start=300)] + [
        (name, "1") for name in names[3000:]
    ]
    rng.shuffle(day1)
    rng.shuffle(day2)
    return report(day1), report(day2)


def run_diff(tmp_path: Path, current: pa.Table, previous: pa.Table | None, partition_rows: int) -> tuple[InventoryDiffResult, pa.Table]:
    snapshot = tmp_path / f"snapshot-{partition_rows}.parquet"
    result = diff_inventory(
        batches_of(current, 97),
        None if previous is None else batches_of(previous.select(["key", "fingerprint"]), 89),
        tmp_path / f"work-{partition_rows}",
        snapshot,
        partition_rows=partition_rows,
    )
    return result, pq.read_table(snapshot)


def candidate_keys(result: InventoryDiffResult) -> list[str]:
    return [key for batch in result.candidate_batches() for key in batch.column("key").to_pylist()]


def test_diff_by_key_range_counts_new_changed_unchanged_deleted_across_ranges(tmp_path: Path) -> None:
    day1, day2 = two_days()
    expected = diff_reports(day2, day1.select(["key", "fingerprint"]))
    assert (expected.new, expected.changed, expected.unchanged, expected.deleted) == (400, 200, 2500, 300)
    result, snapshot = run_diff(tmp_path, day2, day1, partition_rows=100)
    # many ranges, none much bigger than asked: memory holds one range, whatever the report's size
    assert result.key_ranges >= 20 and result.range_rows_max <= 250
    assert (result.rows, result.new, result.changed, result.unchanged, result.deleted, result.not_images) == (
        3100,
        expected.new,
        expected.changed,
        expected.unchanged,
        expected.deleted,
        expected.not_images,
    )
    # candidates in key order across ranges, exactly those of the in-memory diff
    assert result.candidates == expected.candidates.num_rows > 0
    assert candidate_keys(result) == expected.candidates.column("key").to_pylist()
    assert not result.versioned
    # the next day's previous: the whole report's key set, range by range
    assert snapshot.column_names == ["key", "fingerprint"]
    assert sorted(snapshot_rows(snapshot)) == sorted(snapshot_rows(day2))
    assert len(assert_snapshot_layout(tmp_path / "snapshot-100.parquet", 100)) >= 20


def test_one_range_and_many_ranges_give_the_same_diff_and_chain_day_to_day(tmp_path: Path) -> None:
    day1, day2 = two_days(seed=11)
    first_small, snapshot_small = run_diff(tmp_path, day1, None, partition_rows=64)
    first_whole, _ = run_diff(tmp_path, day1, None, partition_rows=10_000)
    assert first_small.key_ranges > 1 and first_whole.key_ranges == 1
    assert (first_small.new, first_small.deleted, first_small.candidates) == (3000, 0, first_whole.candidates)
    assert candidate_keys(first_small) == candidate_keys(first_whole)
    # day 2 against day 1's snapshot as written by the streamed diff (range by range, several row groups)
    second, _ = run_diff(tmp_path, day2, snapshot_small, partition_rows=150)
    assert (second.new, second.changed, second.unchanged, second.deleted) == (400, 200, 2500, 300)


def test_empty_report_counts_every_previous_object_deleted(tmp_path: Path) -> None:
    day1, _ = two_days()
    result, snapshot = run_diff(tmp_path, report([]), day1, partition_rows=100)
    assert (result.rows, result.new, result.deleted, result.candidates, result.key_ranges) == (0, 0, 3000, 0, 1)
    assert candidate_keys(result) == [] and snapshot.num_rows == 0


def test_versioned_candidates_are_flagged_for_the_batch_manifest(tmp_path: Path) -> None:
    current = pa.Table.from_pylist(
        [
            {"key": "a.png", "version_id": None, "etag": "1", "size": 1, "fingerprint": "1|1|t"},
            {"key": "b.png", "version_id": "v2", "etag": "1", "size": 1, "fingerprint": "1|1|t"},
        ],
        schema=ROW_SCHEMA,
    )
    result, _ = run_diff(tmp_path, current, None, partition_rows=100)
    assert result.versioned
    write_batch_manifest_batches("images", result.candidate_batches(), result.versioned, tmp_path / "manifest.csv")
    assert (tmp_path / "manifest.csv").read_text() == "images,a.png,\nimages,b.png,v2\n"


def test_candidates_of_a_split_report_get_their_etag_and_size_back_from_the_fingerprint(tmp_path: Path) -> None:
    # key ranges keep key, version and fingerprint only: the candidates' ETag and size come from the fingerprint
    rows = [
        {"key": f"k{i:04d}.png", "version_id": f"v{i}" if i % 2 else None, "etag": f"e{i}-2", "size": i, "fingerprint": f"e{i}-2|{i}|t"}
        for i in range(500)
    ]
    rows.append({"key": "no-size.png", "version_id": None, "etag": "e", "size": None, "fingerprint": "e||t"})
    result, _ = run_diff(tmp_path, pa.Table.from_pylist(rows, schema=ROW_SCHEMA), None, partition_rows=64)
    assert result.key_ranges > 1
    candidates = pa.Table.from_batches(list(result.candidate_batches())).to_pylist()
    assert sorted(candidates, key=lambda row: row["key"]) == sorted(
        ({name: row[name] for name in ("key", "version_id", "etag", "size")} for row in rows), key=lambda row: row["key"]
    )


def test_split_by_key_range_puts_a_key_equal_to_a_boundary_above_it() -> None:
    batch = report([(key, "1") for key in ["d", "b", "a", "c", "e"]]).to_batches()[0]
    parts = {index: rows.column("key").to_pylist() for index, rows in split_by_key_range(batch, ["b", "d", "x", "y"])}
    assert parts == {0: ["a"], 1: ["b", "c"], 2: ["d", "e"]}


def test_key_sample_stays_small_and_still_cuts_even_ranges(monkeypatch) -> None:
    monkeypatch.setattr(diff_module, "MAX_SAMPLES", 1000)
    sample = KeySample(stride=1)
    keys = [f"k{i:06d}" for i in range(20_000)]
    random.Random(3).shuffle(keys)
    for start in range(0, len(keys), 999):
        sample.add(pa.array(keys[start : start + 999]))
    assert sample.stride > 1 and sample.size <= 1000
    boundaries = sample.boundaries(4)
    assert len(boundaries) == 3
    # each quarter within 20% of 5,000 keys
    cuts = [0, *(int(b[1:]) for b in boundaries), 20_000]
    assert all(4_000 <= high - low <= 6_000 for low, high in zip(cuts, cuts[1:], strict=False))


def test_split_by_key_range_agrees_with_bisect_for_any_number_of_boundaries() -> None:
    rng = random.Random(5)
    keys = [f"{rng.choice('aZé😀/')}{rng.randrange(10**6)}" for _ in range(3000)]
    batch = pa.RecordBatch.from_arrays([pa.array(keys), pa.array(range(len(keys)))], names=["key", "row"])
    for count in (1, 2, 3, 7, 8, 100):
        boundaries = sorted(set(rng.sample(keys, count)))
        expected: dict[int, list[str]] = {}
        for key in keys:
            expected.setdefault(bisect.bisect_right(boundaries, key), []).append(key)
        parts = {index: rows.column("key").to_pylist() for index, rows in split_by_key_range(batch, boundaries)}
        # every key in its range, each range's rows in key order (the split sorts them)
        assert parts == {index: sorted(found) for index, found in expected.items()}


# --------------------------------------------------------------------------- key ranges from the sorted previous snapshot


def test_sorted_previous_snapshot_cuts_the_ranges_and_gives_the_in_memory_diff(tmp_path: Path) -> None:
    day1, day2 = two_days(seed=13)
    # a snapshot sorted by key, without key ranges in its metadata (written by an earlier version)
    snapshot = day1.select(["key", "fingerprint"]).sort_by("key")
    expected = diff_reports(day2, snapshot)
    spill = diff_module.PreviousSpill.write(batches_of(snapshot, 89), tmp_path / "previous.arrow", 200)
    # every 200th key of the sorted snapshot is a boundary; the report is split by them as it is parsed
    assert spill.ranged and len(spill.boundaries) == 14
    assert [sum(b.num_rows for b in rows) for rows in spill.ranges(spill.boundaries)] == [200] * 14 + [200]
    result, written = run_diff(tmp_path, day2, snapshot, partition_rows=200)
    assert result.key_ranges == 15 and result.previous_rows == 3000
    assert (result.new, result.changed, result.unchanged, result.deleted, result.not_images) == (
        expected.new,
        expected.changed,
        expected.unchanged,
        expected.deleted,
        expected.not_images,
    )
    assert candidate_keys(result) == expected.candidates.column("key").to_pylist()
    assert sorted(snapshot_rows(written)) == sorted(snapshot_rows(day2))
    assert_snapshot_layout(tmp_path / "snapshot-200.parquet", 200)


def test_a_snapshot_file_names_its_key_ranges_and_is_read_in_place(tmp_path: Path, monkeypatch) -> None:
    day1, day2 = two_days(seed=19)
    run_diff(tmp_path, day1, None, partition_rows=200)
    snapshot_file = (tmp_path / "snapshot-200.parquet").rename(tmp_path / "day1.parquet")
    from_batches, _ = run_diff(tmp_path, day2, pq.read_table(snapshot_file), partition_rows=200)
    # the file's metadata names its key ranges (the ranges day 1 was diffed in)
    boundaries = assert_snapshot_layout(snapshot_file, 200)
    in_place = diff_module.PreviousSpill.from_snapshot(snapshot_file, 200)
    assert in_place is not None and in_place.rows == 3000 and in_place.boundaries == boundaries
    assert len(in_place.boundaries) >= 10

    def no_spill(*args, **kwargs):
        raise AssertionError("the snapshot file was spilled")

    monkeypatch.setattr(diff_module.PreviousSpill, "write", no_spill)
    result = diff_inventory(batches_of(day2, 97), snapshot_file, tmp_path / "work-file", tmp_path / "day2.parquet", partition_rows=200)
    assert (result.new, result.changed, result.unchanged, result.deleted, result.previous_rows, result.key_ranges) == (
        from_batches.new,
        from_batches.changed,
        from_batches.unchanged,
        from_batches.deleted,
        3000,
        len(boundaries) + 1,
    )
    assert candidate_keys(result) == candidate_keys(from_batches)
    # the file is the caller's: still there
    assert pq.read_table(snapshot_file).num_rows == 3000


def test_a_snapshot_file_without_key_ranges_or_cut_for_other_ranges_is_spilled(tmp_path: Path) -> None:
    day1, day2 = two_days(seed=23)
    expected = diff_reports(day2, day1.select(["key", "fingerprint"]))
    older = tmp_path / "older.parquet"
    ReportSnapshots.write(day1, older)  # a snapshot of a small report, or one written before the metadata
    run_diff(tmp_path, day1, None, partition_rows=500)
    assert diff_module.PreviousSpill.from_snapshot(older, 200) is None
    assert diff_module.PreviousSpill.from_snapshot(tmp_path / "snapshot-500.parquet", 200) is None
    for number, previous in enumerate((older, tmp_path / "snapshot-500.parquet")):
        result = diff_inventory(
            batches_of(day2, 97), previous, tmp_path / f"work-{number}", tmp_path / f"out-{number}.parquet", partition_rows=200
        )
        assert (result.new, result.changed, result.unchanged, result.deleted) == (
            expected.new,
            expected.changed,
            expected.unchanged,
            expected.deleted,
        )
        # the older file is sorted: cut at every 200th of its 3,000 rows; the other's ranges are in any order
        # within: cut by a sample of the report's 3,100 keys
        assert result.key_ranges == (15 if number == 0 else 16)


def test_a_range_the_report_overfills_is_cut_again_by_its_own_keys(tmp_path: Path) -> None:
    # day 1 had 300 keys; day 2 adds 2,000 in one prefix that falls in a single range of day 1's
    day1 = report([(f"a/{i:04d}.png", "1") for i in range(300)])
    bulk = report([*((f"a/{i:04d}.png", "1") for i in range(300)), *((f"a/0150-{i:05d}.jpg", "1") for i in range(2000))])
    _, snapshot = run_diff(tmp_path, day1, None, partition_rows=10_000)
    result, written = run_diff(tmp_path, bulk, snapshot, partition_rows=100)
    assert (result.new, result.unchanged, result.deleted, result.candidates) == (2000, 300, 0, 2000)
    # the overfilled range was diffed in sub-ranges of about partition_rows, not held whole
    assert result.range_rows_max <= 250 and result.key_ranges > 20
    assert candidate_keys(result) == sorted(f"a/0150-{i:05d}.jpg" for i in range(2000))
    assert sorted(written.column("key").to_pylist()) == sorted(bulk.column("key").to_pylist())
    # the sub-ranges go to the snapshot as ranges of their own: the next day's diff reads them in place
    assert len(assert_snapshot_layout(tmp_path / "snapshot-100.parquet", 100)) > 20


def test_range_cuts_merge_shrunk_ranges_and_cut_grown_ones() -> None:
    cuts = diff_module.RangeCuts(100)
    # ranges as diffed, in key order, their rows in any order: 50 + 50 fit in one range, the third does not
    for first, rows in (("a", 50), ("b", 50), ("c", 50), ("d", 90), ("e", 30)):
        cuts.add(pa.array([f"{first}{i:04d}" for i in reversed(range(rows))]), is_sorted=False)
    assert cuts.boundaries() == ["c0000", "d0000", "e0000"]
    # a range sorted because it outgrew RECUT_RANGE x 100 rows: cut into three of ~87 rows at its keys there
    cuts.add(pa.array([f"f{i:04d}" for i in range(260)]), is_sorted=True)
    assert cuts.boundaries() == ["c0000", "d0000", "e0000", "f0000", "f0086", "f0173"]


def test_a_chain_of_days_that_shrinks_and_grows_keeps_ranges_near_partition_rows(tmp_path: Path) -> None:
    """Day 2 deletes most keys of one half and adds as many to the other; its snapshot, read in place by
    day 3, has ranges merged where they shrank and cut where they grew, and every day's diff is exact."""
    day1 = report([(f"k/{i:05d}.png", "1") for i in range(0, 6000, 2)])
    run_diff(tmp_path, day1, None, partition_rows=200)
    first = (tmp_path / "snapshot-200.parquet").rename(tmp_path / "day1.parquet")
    kept = [(key, "1") for key in day1.column("key").to_pylist() if key >= "k/03000" or key.endswith(("0.png", "4.png"))]
    grown = [(f"k/{i:05d}.png", "1") for i in range(3001, 6000, 2)]
    day2 = report(kept + grown)
    expected = diff_reports(day2, day1.select(["key", "fingerprint"]))
    result = diff_inventory(batches_of(day2, 97), first, tmp_path / "work-2", tmp_path / "day2.parquet", partition_rows=200)
    assert (result.new, result.deleted, result.unchanged) == (expected.new, expected.deleted, expected.unchanged) == (1500, 900, 2100)
    boundaries = assert_snapshot_layout(tmp_path / "day2.parquet", 200)
    # 3,600 rows: about 18 ranges of ~200, whatever the 15 ranges of day 1 became
    assert 16 <= len(boundaries) + 1 <= 30
    day3 = report([(key, "2" if key.endswith("8.png") else "1") for key, _ in kept + grown])
    expected = diff_reports(day3, day2.select(["key", "fingerprint"]))
    third = diff_inventory(
        batches_of(day3, 97), tmp_path / "day2.parquet", tmp_path / "work-3", tmp_path / "day3.parquet", partition_rows=200
    )
    assert third.key_ranges == len(boundaries) + 1 and third.range_rows_max <= diff_module.RECUT_RANGE * 200
    assert (third.new, third.changed, third.unchanged, third.deleted) == (0, expected.changed, expected.unchanged, 0)
    assert expected.changed > 0
    assert_snapshot_layout(tmp_path / "day3.parquet", 200)


def test_mass_deletion_against_a_sorted_snapshot(tmp_path: Path) -> None:
    day1, _ = two_days(seed=17)
    snapshot = day1.select(["key", "fingerprint"]).sort_by("key")
    result, written = run_diff(tmp_path, day1.slice(0, 10), snapshot, partition_rows=100)
    assert (result.rows, result.unchanged, result.deleted) == (10, 10, 2990)
    assert written.num_rows == 10


def test_a_reader_error_reaches_the_diff_and_stops_the_reader_thread(tmp_path: Path) -> None:
    read: list[int] = []

    def failing():
        day1, _ = two_days()
        for index, batch in enumerate(batches_of(day1, 500)):
            read.append(index)
            if index == 2:
                raise OSError("disk gone")
            yield batch

    import pytest

    with pytest.raises(OSError, match="disk gone"):
        diff_inventory(failing(), None, tmp_path / "work", tmp_path / "snapshot.parquet", partition_rows=100)
    assert read == [0, 1, 2]


def test_leaving_early_closes_the_reader_in_its_thread() -> None:
    closed: list[bool] = []

    def endless():
        try:
            while True:
                yield 1
        finally:
            closed.append(True)

    with diff_module.prefetched(endless(), 2) as items:
        assert next(items) == 1
    assert closed == [True]


def test_freed_memory_is_handed_back_only_once_a_diff_holds_its_budget_more(tmp_path: Path, monkeypatch) -> None:
    released: list[int] = []

    class Pool:
        def release_unused(self) -> None:
            released.append(1)

    def resident(at_start: int, later: int):
        """The resident size: `at_start` when first read (the diff's baseline), `later` after."""
        sizes = iter([at_start])
        return lambda: next(sizes, later)

    monkeypatch.setattr(pa, "default_memory_pool", Pool)
    day1, day2 = two_days(seed=23)
    _, previous = run_diff(tmp_path, day1, None, partition_rows=200)
    baseline = 500 * 2**20

    # outside a diff: handed back at every call
    released.clear()
    monkeypatch.setattr(diff_module, "resident_bytes", lambda: baseline + 10 * diff_module.RETAINED_BYTES)
    diff_module.release_memory()
    assert len(released) == 1

    # a diff (16 key ranges) holding its whole budget more than at its start: nothing handed back
    released.clear()
    report_batches = batches_of(day2, 97)
    monkeypatch.setattr(diff_module, "resident_bytes", resident(baseline, baseline + diff_module.RETAINED_BYTES))
    result = diff_inventory(report_batches, batches_of(previous, 89), tmp_path / "work-a", tmp_path / "a.parquet", partition_rows=200)
    assert result.key_ranges == 16 and released == []

    # a byte over it: handed back as the diff goes (after each report batch, read and split, and each range)
    monkeypatch.setattr(diff_module, "resident_bytes", resident(baseline, baseline + diff_module.RETAINED_BYTES + 1))
    diff_inventory(report_batches, batches_of(previous, 89), tmp_path / "work-b", tmp_path / "b.parquet", partition_rows=200)
    assert len(released) >= 2 * len(report_batches) + 15


def _huge_pages_disabled() -> bool:
    return diff_module._libc().prctl(diff_module._PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1


def test_transparent_huge_pages_are_off_while_diffs_run_and_as_before_after(tmp_path: Path, monkeypatch) -> None:
    assert diff_module.disable_huge_pages(False) is not None, "prctl(PR_SET_THP_DISABLE) is there on Linux"
    seen: list[bool] = []
    real_diff = diff_module.diff_key_range

    def diff_key_range(*args, **kwargs):
        seen.append(_huge_pages_disabled())
        return real_diff(*args, **kwargs)

    monkeypatch.setattr(diff_module, "diff_key_range", diff_key_range)
    day1, day2 = two_days(seed=29)
    _, previous = run_diff(tmp_path, day1, None, partition_rows=200)
    assert not _huge_pages_disabled()
    diff_inventory(batches_of(day2, 97), batches_of(previous, 89), tmp_path / "work", tmp_path / "a.parquet", partition_rows=200)
    assert seen and all(seen), "every key range was diffed with huge pages off"
    assert not _huge_pages_disabled(), "the process's setting is back once the diff ends"

    # two diffs at once: off until the last one ends
    with diff_module._MEMORY_BUDGET.diffing():
        with diff_module._MEMORY_BUDGET.diffing():
            assert _huge_pages_disabled()
        assert _huge_pages_disabled()
    assert not _huge_pages_disabled()

    # a process that had them off keeps them off
    diff_module.disable_huge_pages(True)
    try:
        with diff_module._MEMORY_BUDGET.diffing():
            assert _huge_pages_disabled()
        assert _huge_pages_disabled()
    finally:
        diff_module.disable_huge_pages(False)


def _arrow_pool_of_a_new_process(code: str, **env: str) -> str:
    environment = {name: value for name, value in os.environ.items() if name != "ARROW_DEFAULT_MEMORY_POOL"} | env
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, check=True)
    return done.stdout.strip()


def test_a_process_that_imports_the_package_first_allocates_arrow_memory_from_jemalloc() -> None:
    probe = "import pyarrow as pa; pa.array([1]); print(pa.default_memory_pool().backend_name)"
    assert _arrow_pool_of_a_new_process(f"import ingest_pipelines; {probe}") == "jemalloc"
    # the environment's choice wins; a process that loaded pyarrow first keeps pyarrow's default
    assert _arrow_pool_of_a_new_process(f"import ingest_pipelines; {probe}", ARROW_DEFAULT_MEMORY_POOL="system") == "system"
    default = _arrow_pool_of_a_new_process(probe)
    assert _arrow_pool_of_a_new_process(f"import pyarrow; import ingest_pipelines; {probe}") == default
