"""Reading inventory data files: gzip CSV (URL-encoded keys, malformed rows), Parquet, ORC, MD5 checks."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from ingest_pipelines.inventory.manifest import load_manifest, parse_report_key
from ingest_pipelines.inventory.reader import ROW_SCHEMA, ReadStats, decode_keys, read_data_file, read_inventory
from ingest_pipelines.testing.inventory_report import CSV_SCHEMA, data_file_bytes, write_inventory_report
from ingest_pipelines.testing.inventory_report import _table as inventory_table
from ingest_pipelines_tests.inventory_fixtures import INVENTORY, PREFIX

ROWS = [
    {"key": "photos/my pic+1.jpg", "size": 10, "etag": "e1", "last_modified": "2024-05-01T00:00:00Z"},
    {"key": "photos/ü.png", "size": 20, "etag": "e2", "last_modified": "2024-05-01T00:00:00Z"},
    {"key": "old.png", "size": 5, "etag": "e3", "is_latest": False},
    {"key": "gone.png", "size": 0, "etag": "", "is_delete_marker": True},
]


def read(path: Path, file_format: str, columns: list[str] | None = None) -> tuple[pa.Table, ReadStats]:
    stats = ReadStats()
    batches = list(read_data_file(path, file_format, columns or CSV_SCHEMA, stats, path.name))
    return pa.Table.from_batches(batches, schema=ROW_SCHEMA), stats


@pytest.mark.parametrize("file_format", ["CSV", "Parquet", "ORC"])
def test_formats_read_the_same_current_objects(tmp_path: Path, file_format: str) -> None:
    path = tmp_path / "data"
    path.write_bytes(data_file_bytes(inventory_table("images", ROWS), file_format))
    table, stats = read(path, file_format)
    assert stats.rows == 4 and stats.malformed_rows == 0
    # non-current versions and delete markers are not objects to index
    assert table.column("key").to_pylist() == ["photos/my pic+1.jpg", "photos/ü.png"]
    assert table.column("size").to_pylist() == [10, 20]
    assert table.column("etag").to_pylist() == ["e1", "e2"]


def test_csv_keys_are_url_decoded_with_unquote_plus() -> None:
    keys, valid = decode_keys(pa.array(["a/b.png", "my+pic%2B1.jpg", "%C3%BC.png", "bad%FF.png"]))
    assert keys.to_pylist()[:3] == ["a/b.png", "my pic+1.jpg", "ü.png"]
    assert valid.to_pylist() == [True, True, True, False]


def test_malformed_csv_rows_are_counted_not_fatal(tmp_path: Path) -> None:
    lines = [
        '"images","a.png","","true","false","10","2024-05-01T00:00:00.000Z","e1","STANDARD"',
        '"images","short-row"',
        '"images","b.png","","true","false","ten","2024-05-01T00:00:00.000Z","e2","STANDARD"',
        '"images","","","true","false","1","2024-05-01T00:00:00.000Z","e3","STANDARD"',
        '"images","c.png","","true","false","30","2024-05-01T00:00:00.000Z","e4","STANDARD"',
    ]
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table, stats = read(path, "CSV")
    assert table.column("key").to_pylist() == ["a.png", "c.png"]
    assert stats.malformed_rows == 3
    assert any("expected 9 fields, got 2" in example for example in stats.examples)
    assert any("non-numeric size" in example for example in stats.examples)


def test_an_etag_with_a_bar_is_a_malformed_row(tmp_path: Path) -> None:
    # the diff takes a candidate's ETag back from `etag|size|last-modified`: an ETag holding `|` cannot be
    lines = [
        '"images","a.png","","true","false","10","2024-05-01T00:00:00.000Z","e1","STANDARD"',
        '"images","bar.png","","true","false","20","2024-05-01T00:00:00.000Z","e|2","STANDARD"',
    ]
    path = tmp_path / "data.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table, stats = read(path, "CSV")
    assert table.column("key").to_pylist() == ["a.png"]
    assert stats.malformed_rows == 1
    assert "`|` in the ETag" in stats.examples[0] and "'bar.png'" in stats.examples[0]


def test_unreadable_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"not parquet at all")
    table, stats = read(path, "Parquet")
    assert table.num_rows == 0 and stats.malformed_files == 1 and "cannot be read as Parquet" in stats.file_errors[0]


def test_corrupted_data_file_md5_mismatch_is_reported_and_the_rest_read(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    rows = [{"key": f"img-{i}.png", "size": i, "etag": f"e{i}"} for i in range(6)]
    key = write_inventory_report(s3, INVENTORY, "images", rows, prefix=PREFIX, files=3, corrupt_file=1)
    manifest = load_manifest(s3, INVENTORY, parse_report_key(key, PREFIX))
    stats = ReadStats()
    table = pa.Table.from_batches(list(read_inventory(s3, INVENTORY, manifest, stats)))
    assert stats.malformed_files == 1
    assert "MD5 mismatch" in stats.file_errors[0] and manifest.files[1].key in stats.file_errors[0]
    assert sorted(table.column("key").to_pylist()) == ["img-0.png", "img-1.png", "img-4.png", "img-5.png"]


@pytest.mark.parametrize("content", [b"", gzip.compress(b"")], ids=["zero-bytes", "empty-gzip"])
def test_an_empty_csv_data_file_is_zero_rows_not_a_malformed_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "data.csv.gz"
    path.write_bytes(content)
    table, stats = read(path, "CSV")
    assert table.num_rows == 0 and stats.rows == 0
    assert stats.malformed_files == 0 and stats.file_errors == []
