"""The issue's checks on one report at a time: moto S3 server + the fake gateway over HTTP, tag calls
counted with botocore event hooks on the importer's own client."""

from __future__ import annotations

import base64
import logging

import pyarrow.parquet as pq
import pytest

from ingest_pipelines.inventory import diff as diff_module
from ingest_pipelines.inventory.diff import ReportSnapshots
from ingest_pipelines.inventory.gateway import GatewayClient
from ingest_pipelines.inventory.importer import InventoryImport
from ingest_pipelines_tests import inventory_fixtures
from ingest_pipelines_tests.inventory_fixtures import IMAGES, INVENTORY, InventoryScene

# fixtures shared by the inventory test modules
gateway = inventory_fixtures.gateway
scene = inventory_fixtures.scene


def body(scene: InventoryScene, uri: str) -> str:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return scene.s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()


def test_only_png_jpg_jpeg_are_candidates_and_get_indexed(scene: InventoryScene) -> None:
    for key in ("a.PNG", "b.jpg", "c.jpeg", "d.gif"):
        scene.put_image(key, {"UserId": f"user-{key}", "team": "blue"})
    result = scene.importer().import_report(scene.report())
    assert result.rows == 4 and result.candidates == 3 and result.not_images == 1
    assert result.statuses["indexed"] == 3 and result.ok
    assert scene.looked_up() == ["a.PNG", "b.jpg", "c.jpeg"]
    assert sorted(call["UserId"] for call in scene.gateway.registrations) == ["user-a.PNG", "user-b.jpg", "user-c.jpeg"]
    image = base64.b64decode(scene.gateway.calls_for("user-a.PNG")[0]["Image"])
    assert image == b"\x89PNG image a.PNG"
    # tagged Indexed=True with the other tags kept; the gif untouched
    assert scene.tags("b.jpg") == {"UserId": "user-b.jpg", "team": "blue", "Indexed": "True"}
    assert scene.tags("d.gif") == {"UserId": "user-d.gif", "team": "blue"}
    assert body(scene, result.batch_manifest) == "images,a.PNG\nimages,b.jpg\nimages,c.jpeg\n"
    assert body(scene, result.results_report).splitlines() == [
        "images,a.PNG,,succeeded,,indexed",
        "images,b.jpg,,succeeded,,indexed",
        "images,c.jpeg,,succeeded,,indexed",
    ]
    rows = scene.history().rows()
    assert {(row["key"], row["status"], row["attempts"]) for row in rows} == {
        ("a.PNG", "indexed", 1),
        ("b.jpg", "indexed", 1),
        ("c.jpeg", "indexed", 1),
    }


def test_missing_user_id_and_indexed_or_ignore_true_are_skipped_without_gateway_call(scene: InventoryScene) -> None:
    scene.put_image("no-user.png", {"team": "blue"})
    scene.put_image("done.png", {"UserId": "fred", "indexed": "TRUE"})
    scene.put_image("ignored.jpg", {"userid": "fred", "IGNORE": "true"})
    result = scene.importer().import_report(scene.report())
    assert result.statuses["skipped_invalid"] == 1 and result.statuses["skipped_non_qualified"] == 2
    assert result.statuses["indexed"] == 0 and result.ok
    assert scene.gateway.calls == [] and scene.tagged() == []
    assert scene.tags("no-user.png") == {"team": "blue"}
    assert "skipped_invalid: no UserId tag" in body(scene, result.results_report)


def test_properties_reach_the_gateway_and_bad_ones_fail_only_their_object(scene: InventoryScene) -> None:
    scene.put_image("fred.png", {"UserId": "fred", "Properties": scene.put_properties("props/fred.json", {"fname": "Fred"})})
    scene.put_image("badjson.png", {"UserId": "u1", "Properties": scene.put_properties("props/bad.json", b"{fname: Fred")})
    scene.put_image("notstring.png", {"UserId": "u2", "Properties": scene.put_properties("props/num.json", {"age": 42})})
    scene.put_image("nofile.png", {"UserId": "u3", "Properties": "s3://images/props/missing.json"})
    scene.put_image("plain.png", {"UserId": "u4"})
    result = scene.importer().import_report(scene.report())
    assert [call["Properties"] for call in scene.gateway.calls_for("fred")] == [{"fname": "Fred"}]
    assert [call["Properties"] for call in scene.gateway.calls_for("u4")] == [{}]
    assert result.statuses["indexed"] == 2 and result.statuses["failed"] == 3 and not result.ok
    assert "not valid JSON" in result.failures["badjson.png"]
    assert "value of 'age' must be a string, not int" in result.failures["notstring.png"]
    assert "cannot be read" in result.failures["nofile.png"]
    assert {call["UserId"] for call in scene.gateway.calls} == {"fred", "u4"}
    assert "Indexed" not in scene.tags("badjson.png") and scene.tags("fred.png")["Indexed"] == "True"
    # a Properties failure is not a gateway failure: not dead-lettered, but recorded
    assert result.dead_lettered == []
    assert scene.history().rows("badjson.png")[0]["status"] == "failed"
    assert "failed,InvalidProperties," in body(scene, result.results_report)


def test_gateway_500_twice_then_200_indexes_once_and_tags_once(scene: InventoryScene) -> None:
    scene.put_image("flaky.png", {"UserId": "flaky"})
    scene.gateway.script([500, 500, 200], user_id="flaky")
    result = scene.importer().import_report(scene.report())
    assert result.statuses["indexed"] == 1 and result.ok
    assert len(scene.gateway.calls_for("flaky")) == 3 and len(scene.gateway.registrations) == 1
    assert scene.tagged() == ["flaky.png"]
    (row,) = scene.history().rows("flaky.png")
    assert row["status"] == "indexed" and row["attempts"] == 3


def test_gateway_always_500_dead_letters_without_tagging(scene: InventoryScene) -> None:
    scene.put_image("broken.png", {"UserId": "broken", "team": "red"})
    scene.put_image("fine.png", {"UserId": "fine"})
    scene.gateway.always(500, user_id="broken")
    result = scene.importer().import_report(scene.report())
    assert result.statuses["failed"] == 1 and result.statuses["indexed"] == 1 and not result.ok
    assert result.dead_lettered == ["broken.png"]
    assert "gateway failed after 3 attempt(s): HTTP500" in result.failures["broken.png"]
    assert len(scene.gateway.calls_for("broken")) == 3
    assert scene.tags("broken.png") == {"UserId": "broken", "team": "red"}
    assert scene.tagged() == ["fine.png"]
    (row,) = scene.history().rows("broken.png")
    assert row["status"] == "failed" and row["attempts"] == 3 and "scripted failure 500" in row["response"]
    assert "images,broken.png,,failed,HTTP500," in body(scene, result.results_report)


def test_second_day_looks_up_only_new_and_changed_objects(scene: InventoryScene) -> None:
    for i in range(10):
        scene.put_image(f"day1/{i}.png", {"UserId": f"u{i}"})
    scene.put_image("day1/notes.txt")
    first = scene.importer().import_report(scene.report("2024-05-01T01-00Z"))
    assert first.statuses["indexed"] == 10 and first.previous_report is None

    scene.calls.clear()
    scene.put_image("day2/a.png", {"UserId": "new-a"})
    scene.put_image("day2/b.jpg", {"UserId": "new-b"})
    scene.s3.delete_object(Bucket=IMAGES, Key="day1/9.png")
    second = scene.importer().import_report(scene.report("2024-05-02T01-00Z"))
    assert scene.looked_up() == ["day2/a.png", "day2/b.jpg"]
    assert second.previous_report == "2024-05-01T01-00Z"
    assert (second.new, second.changed, second.unchanged, second.deleted, second.candidates) == (2, 0, 10, 1, 2)
    assert second.statuses["indexed"] == 2 and len(scene.gateway.registrations) == 12

    # a changed object (new ETag) is a candidate again; its new version is indexed
    scene.calls.clear()
    scene.put_image("day1/0.png", {"UserId": "u0"}, body=b"a new face")
    third = scene.importer().import_report(scene.report("2024-05-03T01-00Z"))
    assert scene.looked_up() == ["day1/0.png"] and (third.new, third.changed) == (0, 1)
    assert third.statuses["indexed"] == 1


@pytest.mark.parametrize("file_format", ["Parquet", "ORC"])
def test_parquet_and_orc_reports_import_like_csv(scene: InventoryScene, file_format: str) -> None:
    scene.put_image("x/a.png", {"UserId": "a"})
    scene.put_image("x/b c.jpg", {"UserId": "b"})
    scene.put_image("x/c.gif", {"UserId": "c"})
    result = scene.importer().import_report(scene.report(file_format=file_format))
    assert result.file_format == file_format and result.rows == 3 and result.candidates == 2
    assert result.statuses["indexed"] == 2 and scene.tags("x/b c.jpg")["Indexed"] == "True"


def test_url_encoded_csv_keys_reach_the_right_object(scene: InventoryScene) -> None:
    scene.put_image("photos/my pic+1.jpg", {"UserId": "fred"})
    result = scene.importer().import_report(scene.report())
    assert result.statuses["indexed"] == 1 and scene.tags("photos/my pic+1.jpg")["Indexed"] == "True"
    assert body(scene, result.batch_manifest) == "images,photos/my+pic%2B1.jpg\n"


def test_rerunning_a_report_never_indexes_an_object_version_twice(scene: InventoryScene) -> None:
    scene.put_image("a.png", {"UserId": "fred", "team": "blue"})
    ref = scene.report()
    assert scene.importer().import_report(ref).statuses["indexed"] == 1
    again = scene.importer().import_report(ref)
    assert again.statuses["skipped_non_qualified"] == 1 and len(scene.gateway.calls) == 1
    # a run that died after the history write but before tagging: the rerun tags, never calls again
    scene.put_tags("a.png", {"UserId": "fred", "team": "blue"})
    repaired = scene.importer().import_report(ref)
    assert repaired.statuses["already_indexed"] == 1 and repaired.ok
    assert len(scene.gateway.calls) == 1 and scene.tags("a.png")["Indexed"] == "True"


def test_corrupted_data_file_is_reported_and_the_rest_imported(scene: InventoryScene) -> None:
    for i in range(4):
        scene.put_image(f"{i}.png", {"UserId": f"u{i}"})
    result = scene.importer().import_report(scene.report(files=2, corrupt_file=0))
    assert result.malformed_files == 1 and not result.ok
    assert "MD5 mismatch" in result.malformed_examples[0]
    assert result.statuses["indexed"] == 2


def test_batch_manifest_goes_under_batch_manifest_prefix(scene: InventoryScene) -> None:
    scene.put_image("a.png", {"UserId": "fred"})
    result = scene.importer().import_report(scene.report())
    assert result.batch_manifest == f"s3://{INVENTORY}/inv/batch-operations/images/daily/2024-05-01T01-00Z/manifest.csv"
    assert result.results_report.endswith("/batch-operations/images/daily/2024-05-01T01-00Z/results.csv")


def test_object_deleted_after_the_report_is_counted_missing(scene: InventoryScene) -> None:
    scene.put_image("here.png", {"UserId": "here"})
    rows = [{"key": "here.png", "size": 1, "etag": "e1"}, {"key": "gone.png", "size": 1, "etag": "e2"}]
    result = scene.importer().import_report(scene.report(rows=rows))
    assert result.statuses["missing"] == 1 and result.statuses["indexed"] == 1 and result.ok


def test_unicode_keys_are_indexed_with_an_ascii_idempotency_key(scene: InventoryScene) -> None:
    # an HTTP header is latin-1: a raw emoji key used to crash the whole run in http.client
    scene.put_image("odd/emoji😀.jpeg", {"UserId": "emoji"})
    scene.put_image("odd/unicodé ñ.png", {"UserId": "accent"})
    result = scene.importer().import_report(scene.report())
    assert result.statuses["indexed"] == 2 and result.ok
    assert scene.tags("odd/emoji😀.jpeg")["Indexed"] == "True"
    keys = sorted(request.headers["Idempotency-Key"] for request in scene.gateway.server.requests)
    assert keys[0] == "images/odd/emoji%F0%9F%98%80.jpeg@" + scene.s3.head_object(Bucket=IMAGES, Key="odd/emoji😀.jpeg")["ETag"].strip('"')
    assert keys[1].startswith("images/odd/unicod%C3%A9+%C3%B1.png@")


def test_an_unexpected_error_on_one_object_fails_only_that_object(scene: InventoryScene) -> None:
    scene.put_image("ok.png", {"UserId": "fine"})
    scene.put_image("boom.png", {"UserId": "boom"})
    importer = scene.importer()
    register = importer.gateway.register

    def explode(user_id: str, *args: object, **kwargs: object):
        if user_id == "boom":
            raise RuntimeError("gateway client bug")
        return register(user_id, *args, **kwargs)

    importer.gateway.register = explode  # type: ignore[method-assign]
    result = importer.import_report(scene.report())
    assert result.statuses["indexed"] == 1 and result.statuses["failed"] == 1
    assert "RuntimeError: gateway client bug" in result.failures["boom.png"]
    assert "Indexed" not in scene.tags("boom.png") and scene.tags("ok.png")["Indexed"] == "True"
    assert "failed,InternalError," in body(scene, result.results_report)


def test_properties_with_an_invalid_bucket_name_fail_only_that_object(scene: InventoryScene) -> None:
    # botocore refuses the bucket name before any request (ParamValidationError, not a ClientError)
    scene.put_image("badbucket.png", {"UserId": "u1", "Properties": "s3://Bad Bucket/props/x.json"})
    scene.put_image("fine.png", {"UserId": "u2"})
    result = scene.importer().import_report(scene.report())
    assert result.statuses["indexed"] == 1 and result.statuses["failed"] == 1
    assert "Properties file s3://Bad Bucket/props/x.json cannot be read" in result.failures["badbucket.png"]
    assert "failed,InvalidProperties," in body(scene, result.results_report)


def test_reports_bigger_than_one_key_range_import_like_small_ones(scene: InventoryScene, monkeypatch, caplog) -> None:
    # 3 rows per key range: the 24-object report is diffed in several ranges, the Batch manifest still in key order
    monkeypatch.setattr(diff_module, "PARTITION_ROWS", 3)
    for i in range(20):
        scene.put_image(f"faces/{i:02d}.png", {"UserId": f"u{i}"})
    for i in range(4):
        scene.put_image(f"notes/{i}.txt")
    with caplog.at_level(logging.INFO, logger="ingest_pipelines.inventory.importer"):
        first = scene.importer().import_report(scene.report("2024-05-01T01-00Z"))
    assert "; 8 key range(s))" in caplog.text
    assert (first.rows, first.new, first.candidates, first.not_images, first.statuses["indexed"]) == (24, 24, 20, 4, 20)
    assert body(scene, first.batch_manifest).splitlines() == [f"images,faces/{i:02d}.png" for i in range(20)]

    scene.calls.clear()
    scene.put_image("faces/05.png", {"UserId": "u5"}, body=b"a new face")
    scene.put_image("faces/99.jpg", {"UserId": "u99"})
    for i in (0, 13, 19):
        scene.s3.delete_object(Bucket=IMAGES, Key=f"faces/{i:02d}.png")
    second = scene.importer().import_report(scene.report("2024-05-02T01-00Z"))
    assert (second.new, second.changed, second.unchanged, second.deleted, second.candidates) == (1, 1, 20, 3, 2)
    assert scene.looked_up() == ["faces/05.png", "faces/99.jpg"]


def test_a_previous_snapshot_in_the_old_single_file_format_is_diffed_against(scene: InventoryScene) -> None:
    for i in range(6):
        scene.put_image(f"day1/{i}.png", {"UserId": f"u{i}"})
    first_ref = scene.report("2024-05-01T01-00Z")
    first = scene.importer().import_report(first_ref)
    assert first.statuses["indexed"] == 6
    # rewrite day 1's snapshot as earlier versions wrote it: report order (here reversed), one row group
    snapshots = ReportSnapshots(scene.state(), "faces")
    table = snapshots.load(first_ref, "2024-05-01T01-00Z")
    old = scene.tmp_path / "old.parquet"
    pq.write_table(table.sort_by("key").take(list(reversed(range(table.num_rows)))), old, compression="zstd")
    snapshots.upload(first_ref, old)
    assert snapshots.load(first_ref, "2024-05-01T01-00Z").column("key").to_pylist()[0] == "day1/5.png"

    scene.calls.clear()
    scene.put_image("day2/new.png", {"UserId": "n"})
    scene.s3.delete_object(Bucket=IMAGES, Key="day1/2.png")
    second_ref = scene.report("2024-05-02T01-00Z")
    second = scene.importer().import_report(second_ref)
    assert second.previous_report == "2024-05-01T01-00Z"
    assert (second.new, second.changed, second.unchanged, second.deleted) == (1, 0, 5, 1)
    assert scene.looked_up() == ["day2/new.png"]
    # day 2's snapshot is in the new layout: day 2's key set, range by range (here one range), and it names its
    # key ranges, so day 3 reads it in place
    keys = snapshots.load(second_ref, "2024-05-02T01-00Z").column("key").to_pylist()
    assert sorted(keys) == [f"day1/{i}.png" for i in (0, 1, 3, 4, 5)] + ["day2/new.png"]
    from ingest_pipelines.inventory.diff import PARTITION_ROWS, PreviousSpill

    downloaded = snapshots.download(second_ref, "2024-05-02T01-00Z", scene.tmp_path / "day2.parquet")
    in_place = PreviousSpill.from_snapshot(downloaded, PARTITION_ROWS)
    assert in_place is not None and in_place.rows == 6 and in_place.boundaries == []


def test_spill_dir_holds_the_run_s_temp_files_and_is_left_empty(scene: InventoryScene, tmp_path) -> None:
    scene.put_image("a.png", {"UserId": "u"})
    spill = tmp_path / "spill" / "inventory"
    workflow = scene.workflow().model_copy(update={"spillDir": str(spill)})
    importer = InventoryImport(workflow, scene.store(), scene.state(), scene.history(), GatewayClient(workflow.gateway))
    assert importer.import_report(scene.report()).statuses["indexed"] == 1
    assert spill.is_dir() and list(spill.iterdir()) == []
