"""Finding reports in the real S3 Inventory layout and reading a verified manifest.json (moto server)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from ingest_pipelines.inventory.manifest import (
    UNREADABLE_CHECKSUM,
    ListingBudget,
    ManifestError,
    find_new_reports,
    load_manifest,
    parse_file_schema,
    parse_report_key,
    reports_for_date,
)
from ingest_pipelines.testing.inventory_report import ORC_SCHEMA, PARQUET_SCHEMA, write_inventory_report
from ingest_pipelines_tests.inventory_fixtures import INVENTORY, PREFIX

ROWS = [{"key": "a.png", "size": 3, "etag": "e1"}]


@pytest.mark.parametrize(
    ("key", "date"),
    [
        ("inv/images/daily/2024-05-01T01-00Z/manifest.json", "2024-05-01"),
        ("inv/images/daily/2024-05-01T01-00Z/manifest.checksum", "2024-05-01"),
        ("inv/reports/daily/2024-05-01T01-00Z/manifest.json", None),
        ("inv/images/hive/2024-05-01T01-00Z/manifest.json", None),
        ("inv/images/daily/hive/dt=2024-05-01-01-00/symlink.txt", None),
        ("inv/images/daily/data/0f.csv.gz", None),
        ("inv/images/daily/2024-05-01/manifest.json", None),
        ("other/images/daily/2024-05-01T01-00Z/manifest.json", None),
    ],
)
def test_parse_report_key(key: str, date: str | None) -> None:
    ref = parse_report_key(key, "inv")
    assert (ref.date if ref else None) == date
    if ref:
        assert ref.source_bucket == "images" and ref.config_id == "daily" and ref.manifest_key.endswith("T01-00Z/manifest.json")


def test_file_schemas() -> None:
    assert parse_file_schema("Bucket, Key, Size", "CSV") == ["Bucket", "Key", "Size"]
    assert parse_file_schema(PARQUET_SCHEMA, "Parquet")[:3] == ["bucket", "key", "version_id"]
    assert parse_file_schema(ORC_SCHEMA, "ORC")[-2:] == ["e_tag", "storage_class"]


def test_load_manifest_verifies_checksum(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    key = write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, files=2)
    ref = parse_report_key(key, PREFIX)
    manifest = load_manifest(s3, INVENTORY, ref)
    assert manifest.source_bucket == "images" and manifest.file_format == "CSV" and len(manifest.files) == 2
    assert manifest.file_schema[:2] == ["Bucket", "Key"]
    s3.put_object(Bucket=INVENTORY, Key=ref.checksum_key, Body=b"0" * 32)
    with pytest.raises(ManifestError, match="manifest.json: MD5 mismatch"):
        load_manifest(s3, INVENTORY, ref)
    s3.delete_object(Bucket=INVENTORY, Key=ref.checksum_key)
    with pytest.raises(ManifestError, match="manifest.checksum is missing"):
        load_manifest(s3, INVENTORY, ref)


def test_find_new_reports_marks_and_incomplete_reports(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-02T01-00Z", checksum=False)
    write_inventory_report(s3, INVENTORY, "reports", ROWS, prefix=PREFIX, timestamp="2024-05-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "other", ROWS, prefix=PREFIX, config_id="weekly", timestamp="2024-05-01T03-00Z")

    first = find_new_reports(s3, INVENTORY, PREFIX, {}, ListingBudget(50, 20))
    assert first.complete
    assert sorted(ref.manifest_key for ref, _ in first.reports) == [
        "inv/images/daily/2024-05-01T01-00Z/manifest.json",
        "inv/other/weekly/2024-05-01T03-00Z/manifest.json",
    ]
    assert first.marks == {"images/daily": "2024-05-01T01-00Z", "other/weekly": "2024-05-01T03-00Z"}

    again = find_new_reports(s3, INVENTORY, PREFIX, first.marks, ListingBudget(50, 20))
    assert again.reports == [] and again.marks == first.marks

    # AWS writes manifest.checksum last: the day-2 report counts once it is there
    ref = parse_report_key("inv/images/daily/2024-05-02T01-00Z/manifest.json", PREFIX)
    body = s3.get_object(Bucket=INVENTORY, Key=ref.manifest_key)["Body"].read()
    s3.put_object(Bucket=INVENTORY, Key=ref.checksum_key, Body=hashlib.md5(body).hexdigest().encode())
    third = find_new_reports(s3, INVENTORY, PREFIX, again.marks, ListingBudget(50, 20))
    assert [(r.timestamp, checksum) for r, checksum in third.reports] == [("2024-05-02T01-00Z", hashlib.md5(body).hexdigest())]


def test_listing_budget_bounds_a_tick_and_resumes(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    for bucket in ("a-images", "b-images", "c-images"):
        write_inventory_report(s3, INVENTORY, bucket, ROWS, prefix=PREFIX)
    found: list[str] = []
    marks: dict[str, str] = {}
    resume = None
    for _tick in range(10):
        result = find_new_reports(s3, INVENTORY, PREFIX, marks, ListingBudget(4, 20), resume)
        found += [ref.source_bucket for ref, _ in result.reports]
        marks, resume = result.marks, result.resume_after
        if result.complete:
            break
    assert sorted(found) == ["a-images", "b-images", "c-images"]


def test_reports_for_date(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-02T01-00Z")
    write_inventory_report(s3, INVENTORY, "reports", ROWS, prefix=PREFIX, timestamp="2024-05-02T01-00Z")
    assert [ref.timestamp for ref in reports_for_date(s3, INVENTORY, PREFIX, "2024-05-02")] == ["2024-05-02T01-00Z"]
    assert reports_for_date(s3, INVENTORY, PREFIX, "2024-05-03") == []


def test_an_unreadable_checksum_does_not_stop_the_other_reports(s3) -> None:
    # one truncated/garbage manifest.checksum used to fail every sensor tick, so no report was ever found again
    s3.create_bucket(Bucket=INVENTORY)
    bad = write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, config_id="a-daily", timestamp="2024-05-01T01-00Z")
    s3.put_object(Bucket=INVENTORY, Key=bad.replace("manifest.json", "manifest.checksum"), Body=b"<html>oops</html>")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, config_id="b-daily", timestamp="2024-05-01T01-00Z")
    found = find_new_reports(s3, INVENTORY, PREFIX, {}, ListingBudget(50, 20))
    assert found.complete
    # the bad one is still requested: its run fails with the reason, where the user looks
    checksums = {ref.config_id: checksum for ref, checksum in found.reports}
    assert checksums["a-daily"] == UNREADABLE_CHECKSUM and len(checksums["b-daily"]) == 32
    assert found.marks == {"images/a-daily": "2024-05-01T01-00Z", "images/b-daily": "2024-05-01T01-00Z"}
    (problem,) = found.problems
    assert "a-daily/2024-05-01T01-00Z/manifest.checksum: not an MD5 checksum" in problem


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("files", None, "files is missing or not a list"),
        ("files", {"key": "x"}, "files is missing or not a list"),
        ("fileSchema", None, "fileSchema is missing"),
    ],
)
def test_manifest_without_files_or_schema_fails_with_the_field(s3, field: str, value: object, message: str) -> None:
    # a manifest without `files` used to read as an empty report: its empty snapshot made the next day re-check everything
    s3.create_bucket(Bucket=INVENTORY)
    key = write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX)
    ref = parse_report_key(key, PREFIX)
    manifest = orjson.loads(s3.get_object(Bucket=INVENTORY, Key=key)["Body"].read())
    if value is None:
        manifest.pop(field)
    else:
        manifest[field] = value
    body = orjson.dumps(manifest)
    s3.put_object(Bucket=INVENTORY, Key=key, Body=body)
    s3.put_object(Bucket=INVENTORY, Key=ref.checksum_key, Body=hashlib.md5(body).hexdigest().encode())
    with pytest.raises(ManifestError, match=message):
        load_manifest(s3, INVENTORY, ref)


def test_a_report_delivered_late_is_still_found_once(s3) -> None:
    # the mark used to hide a report that landed after a newer one of its series
    s3.create_bucket(Bucket=INVENTORY)
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-04-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-03T01-00Z")
    first = find_new_reports(s3, INVENTORY, PREFIX, {}, ListingBudget(50, 20), seen={})
    assert [ref.timestamp for ref, _ in first.reports] == ["2024-04-01T01-00Z", "2024-05-01T01-00Z", "2024-05-03T01-00Z"]
    # only what is within LATE_REPORT_DAYS of the mark is kept
    assert first.seen == {"images/daily": ["2024-05-01T01-00Z", "2024-05-03T01-00Z"]}

    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-02T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-04-02T01-00Z")  # too late to look for
    second = find_new_reports(s3, INVENTORY, PREFIX, first.marks, ListingBudget(50, 20), seen=first.seen)
    assert [ref.timestamp for ref, _ in second.reports] == ["2024-05-02T01-00Z"]
    assert second.marks == {"images/daily": "2024-05-03T01-00Z"}
    third = find_new_reports(s3, INVENTORY, PREFIX, second.marks, ListingBudget(50, 20), seen=second.seen)
    assert third.reports == []
    # a cursor from before `seen` existed: everything up to the mark counts as seen (no re-requests)
    upgraded = find_new_reports(s3, INVENTORY, PREFIX, second.marks, ListingBudget(50, 20))
    assert upgraded.reports == [] and upgraded.seen == second.seen


def test_a_report_dated_after_the_last_partition_waits_for_its_day(s3) -> None:
    s3.create_bucket(Bucket=INVENTORY)
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-01T01-00Z")
    write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX, timestamp="2024-05-03T01-00Z")
    found = find_new_reports(s3, INVENTORY, PREFIX, {}, ListingBudget(50, 20), seen={}, until="2024-05-02")
    assert [ref.timestamp for ref, _ in found.reports] == ["2024-05-01T01-00Z"]
    assert found.marks == {"images/daily": "2024-05-01T01-00Z"}
    assert "inventory date 2024-05-03 is after 2024-05-02" in found.problems[0]
    later = find_new_reports(s3, INVENTORY, PREFIX, found.marks, ListingBudget(50, 20), seen=found.seen, until="2024-05-03")
    assert [ref.timestamp for ref, _ in later.reports] == ["2024-05-03T01-00Z"]


def test_manifest_source_bucket_must_match_the_report_folder(s3) -> None:
    # the folder names the bucket the inventory is of; a manifest naming another would send that bucket's objects
    s3.create_bucket(Bucket=INVENTORY)
    key = write_inventory_report(s3, INVENTORY, "images", ROWS, prefix=PREFIX)
    ref = parse_report_key(key, PREFIX)
    manifest = orjson.loads(s3.get_object(Bucket=INVENTORY, Key=key)["Body"].read())
    manifest["sourceBucket"] = "payroll"
    body = orjson.dumps(manifest)
    s3.put_object(Bucket=INVENTORY, Key=key, Body=body)
    s3.put_object(Bucket=INVENTORY, Key=ref.checksum_key, Body=hashlib.md5(body).hexdigest().encode())
    with pytest.raises(ManifestError, match="sourceBucket 'payroll' is not the report folder's source bucket 'images'"):
        load_manifest(s3, INVENTORY, ref)
