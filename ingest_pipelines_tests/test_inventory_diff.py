"""The columnar diff of a report against the previous one, and the snapshots that carry it across days."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.inventory.diff import ReportSnapshots, diff_reports
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
