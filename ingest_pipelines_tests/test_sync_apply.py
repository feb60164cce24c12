"""Applying batches to destinations on the moto server: connylabs' cases (markers, cleanUp, several
destinations, webhook), streamed copies with metadata, folders, deletes, odd keys, idempotent re-runs."""

from __future__ import annotations

import os
import time

import pytest

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.sync.apply import SyncApplyError
from ingest_pipelines.sync.copies import same_endpoint
from ingest_pipelines.sync.resync import resync_batches
from ingest_pipelines.sync.verify import destinations_match
from ingest_pipelines.sync.webhook import WebhookError, post_uris
from ingest_pipelines.testing.http_server import Response
from ingest_pipelines_tests.sync_fixtures import SyncRig, bucket_keys, put, s3_config

ODD_KEYS = ["with space.txt", "plus+sign.txt", "per%cent%20.txt", "ünïcødé/ファイル.txt", "double//slash.txt", "a/b/c/deep.txt"]


@pytest.fixture
def buckets(s3):
    for name in ("src", "dst", "dst2"):
        s3.create_bucket(Bucket=name)
    return s3


def test_marker_present_means_no_copy_and_cleanup_deletes_source(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "in/a.txt", b"A")
    put(s3, "src", "in/b.txt", b"B")
    s3.put_object(Bucket="dst", Key="meta/a.txt.done", Body=b"")  # a.txt delivered earlier
    dest = s3_config(s3_server.endpoint_url, "dst", "dst", "out/", metafilesPrefix="meta/")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src", "in/"), [dest], cleanUp=True)
    rig.run_until_idle()
    result = rig.apply()
    assert result.copied == 1 and result.already_present == 1
    assert bucket_keys(s3, "dst").keys() == {"meta/a.txt.done", "meta/b.txt.done", "out/b.txt"}
    assert s3.get_object(Bucket="dst", Key="meta/b.txt.done")["ContentLength"] == 0
    assert bucket_keys(s3, "src") == {}  # cleaned up: every destination holds both
    assert result.cleaned_up == 2
    # the cleanUp deletes are not changes: nothing to propagate
    assert rig.run_until_idle() == []
    again = rig.apply()  # idempotent: nothing copied, nothing fails
    assert again.copied == 0 and again.failures == []


def test_object_present_but_marker_missing_writes_marker_only(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "a.txt", b"same")
    s3.put_object(Bucket="dst", Key="a.txt", Body=b"same")
    before = s3.head_object(Bucket="dst", Key="a.txt")["LastModified"]
    rig = SyncRig(
        tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst", metafilesPrefix="m/")]
    )
    rig.run_until_idle()
    result = rig.apply()
    assert result.copied == 0 and result.markers_written == 1
    assert set(bucket_keys(s3, "dst")) == {"a.txt", "m/a.txt.done"}
    assert s3.head_object(Bucket="dst", Key="a.txt")["LastModified"] == before


def test_two_destinations_only_the_lacking_one_is_written(tmp_path, buckets, s3_server, http_server) -> None:
    s3 = buckets
    put(s3, "src", "k1", b"one")
    put(s3, "src", "k2", b"two")
    s3.put_object(Bucket="dst", Key="k1", Body=b"one")
    s3.put_object(Bucket="dst", Key="k2", Body=b"two")
    hook = http_server(lambda request: Response(200, {"ok": True}))
    rig = SyncRig(
        tmp_path,
        s3_config(s3_server.endpoint_url, "src", "src"),
        [s3_config(s3_server.endpoint_url, "dst", "dst"), s3_config(s3_server.endpoint_url, "dst2", "dst2")],
        webhook=hook.url + "/hook",
    )
    before = {k: s3.head_object(Bucket="dst", Key=k)["LastModified"] for k in ("k1", "k2")}
    rig.run_until_idle()
    result = rig.apply()
    assert result.copied == 2 and result.already_present == 2
    assert {k: s3.head_object(Bucket="dst", Key=k)["LastModified"] for k in ("k1", "k2")} == before
    assert set(bucket_keys(s3, "dst2")) == {"k1", "k2"}
    # the webhook got the JSON array of destination URIs, with the batch id as idempotency key
    assert len(hook.requests) == 1
    request = hook.requests[0]
    assert request.method == "POST" and request.path == "/hook"
    assert sorted(request.json()) == ["s3://dst/k1", "s3://dst/k2", "s3://dst2/k1", "s3://dst2/k2"]
    assert request.headers["Idempotency-Key"] == rig.emitted[0].id
    rig.apply()  # a re-run: no second call for the same batch
    assert len(hook.requests) == 1


def test_webhook_retries_with_backoff_then_gives_up(http_server) -> None:
    answers = iter([Response(503, "busy", {"Retry-After": "0"}), Response(500, "oops"), Response(204, b"")])
    server = http_server(lambda request: next(answers))
    assert post_uris(server.url, ["s3://b/k"], "batch-1", backoff=0.01) == 204
    assert [r.headers["Idempotency-Key"] for r in server.requests] == ["batch-1"] * 3
    refusing = http_server(lambda request: Response(400, "bad"))
    with pytest.raises(WebhookError, match="batch-2: refused with HTTP 400"):
        post_uris(refusing.url, [], "batch-2", backoff=0.01)
    assert len(refusing.requests) == 1


def test_streamed_copy_keeps_content_type_and_metadata(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    s3.put_object(Bucket="src", Key="doc.json", Body=b'{"a": 1}', ContentType="application/json", Metadata={"owner": "ann"})
    # "localhost" vs "127.0.0.1": another endpoint as far as the config says, so no CopyObject
    other = s3_server.endpoint_url.replace("127.0.0.1", "localhost")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(other, "dst", "dst", "copy/")])
    assert same_endpoint(rig.source, rig.destinations[0]) is False
    rig.run_until_idle()
    assert rig.apply().copied == 1
    head = s3.head_object(Bucket="dst", Key="copy/doc.json")
    assert head["ContentType"] == "application/json" and head["Metadata"] == {"owner": "ann"}
    assert s3.get_object(Bucket="dst", Key="copy/doc.json")["Body"].read() == b'{"a": 1}'


def test_server_side_copy_keeps_content_type_and_metadata(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    s3.put_object(Bucket="src", Key="img.png", Body=b"png", ContentType="image/png", Metadata={"k": "v"})
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst")])
    assert same_endpoint(rig.source, rig.destinations[0]) is True
    rig.run_until_idle()
    rig.apply()
    head = s3.head_object(Bucket="dst", Key="img.png")
    assert head["ContentType"] == "image/png" and head["Metadata"] == {"k": "v"}


def test_odd_keys_reach_s3_and_folder_destinations(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    for i, key in enumerate(ODD_KEYS):
        put(s3, "src", "p/" + key, f"body {i}".encode())
    folder = tmp_path / "mirror"
    rig = SyncRig(
        tmp_path,
        s3_config(s3_server.endpoint_url, "src", "src", "p/"),
        [s3_config(s3_server.endpoint_url, "dst", "dst", "q/"), FilesystemStoreConfig(name="folder", path=str(folder))],
    )
    rig.run_until_idle()
    result = rig.apply()
    assert result.failures == [] and result.copied == 2 * len(ODD_KEYS)
    assert set(bucket_keys(s3, "dst")) == {"q/" + k for k in ODD_KEYS}
    for i, key in enumerate(ODD_KEYS):
        path = folder / key
        assert path.read_bytes() == f"body {i}".encode()
        lm = s3.head_object(Bucket="src", Key="p/" + key)["LastModified"].timestamp()
        assert abs(path.stat().st_mtime - lm) < 1
    assert not [p for p in folder.rglob(".tmp-*")]
    for batch in rig.emitted:
        assert destinations_match("wf", [batch], rig.source, rig.destinations, rig.ledger).passed
    # a second run (new ledger: nothing remembered) finds every object present and writes nothing
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}
    fresh = SyncRig(tmp_path / "again", rig.source.config, [d.config for d in rig.destinations])
    fresh.run_until_idle()
    again = fresh.apply()
    assert again.copied == 0 and again.already_present == 2 * len(ODD_KEYS)
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()} == mtimes


def test_deletes_propagate_only_where_enabled(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "a")
    put(s3, "src", "b")
    folder = tmp_path / "folder"
    rig = SyncRig(
        tmp_path,
        s3_config(s3_server.endpoint_url, "src", "src"),
        [
            s3_config(s3_server.endpoint_url, "dst", "dst", deletes=True, metafilesPrefix=".m/"),
            s3_config(s3_server.endpoint_url, "dst2", "dst2"),
            FilesystemStoreConfig(name="folder", path=str(folder), deletes=True),
        ],
    )
    rig.run_until_idle()
    rig.apply()
    s3.delete_object(Bucket="src", Key="a")
    rig.run_until_idle()
    result = rig.apply(rig.emitted[-1:])
    assert result.deletes == 1 and result.deleted_in_destinations == 2
    assert set(bucket_keys(s3, "dst")) == {"b", ".m/b.done"}
    assert set(bucket_keys(s3, "dst2")) == {"a", "b"}
    assert sorted(p.name for p in folder.iterdir()) == ["b"]
    assert destinations_match("wf", [rig.emitted[-1]], rig.source, rig.destinations, rig.ledger).passed


def test_update_then_stale_batch_does_not_regress(tmp_path, buckets, s3_server) -> None:
    """Re-applying an old batch after a newer one (a retry, a backfill) leaves the newer object."""
    s3 = buckets
    s3.put_bucket_versioning(Bucket="src", VersioningConfiguration={"Status": "Enabled"})
    put(s3, "src", "k", b"old")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst")])
    rig.run_until_idle()
    put(s3, "src", "k", b"new")
    rig.run_until_idle()
    old, new = rig.emitted
    rig.apply([new])
    result = rig.apply([old])
    assert result.superseded == 1 and result.copied == 0
    assert s3.get_object(Bucket="dst", Key="k")["Body"].read() == b"new"


def test_source_changed_before_apply_is_left_to_the_later_batch(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "k", b"v1")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst")])
    rig.run_until_idle()
    put(s3, "src", "k", b"v2")  # unversioned: v1 is gone
    first = rig.apply()
    # S3 refuses the copy (CopySourceIfMatch); moto ignores the precondition and copies v2: either
    # way this batch records nothing for k and the later batch owns it
    assert first.superseded == 1 and first.failures == [] and rig.ledger.applied_in_batch("wf", rig.emitted[0].id) == set()
    assert destinations_match("wf", [rig.emitted[0]], rig.source, rig.destinations, rig.ledger).passed
    rig.run_until_idle()
    rig.apply(rig.emitted[-1:])
    assert s3.get_object(Bucket="dst", Key="k")["Body"].read() == b"v2"


def test_failures_are_named_and_the_rest_is_applied(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "ok")
    put(s3, "src", "blocked/x")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "blocked").write_text("a file where a folder must go")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [FilesystemStoreConfig(name="folder", path=str(folder))])
    rig.run_until_idle()
    batch = rig.batch_store.read("snapshot", "all", rig.emitted[0].id)
    with pytest.raises(SyncApplyError, match=r"blocked/x -> folder: "):
        rig.applier.apply(batch)
    assert (folder / "ok").is_file()
    assert rig.ledger.applied_in_batch("wf", batch.id) == {("ok", "folder")}
    os.remove(folder / "blocked")
    assert rig.applier.apply(batch).copied == 1  # the retry does only the rest
    assert (folder / "blocked" / "x").is_file()


def test_verify_reports_a_missing_object(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "a")
    put(s3, "src", "b", b"bb")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst")])
    rig.run_until_idle()
    rig.apply()
    s3.delete_object(Bucket="dst", Key="b")
    outcome = destinations_match("wf", [rig.emitted[0]], rig.source, rig.destinations, rig.ledger)
    assert not outcome.passed and outcome.problems == ["b -> dst: missing"]


def test_webhook_owed_after_a_failed_call_is_sent_by_the_rerun(tmp_path, buckets, s3_server, http_server) -> None:
    """The changes were recorded but the POST never succeeded (or the process died before it): the
    re-run has nothing to copy and still sends the batch's full URI list, once."""
    s3 = buckets
    put(s3, "src", "a")
    put(s3, "src", "b")
    answers = {"status": 500}
    hook = http_server(lambda request: Response(answers["status"], b""))
    calls: list[list[str]] = []

    def flaky_post(url: str, uris: list[str], key: str) -> int:
        calls.append(uris)
        return post_uris(url, uris, key, attempts=1)

    rig = SyncRig(
        tmp_path,
        s3_config(s3_server.endpoint_url, "src", "src"),
        [s3_config(s3_server.endpoint_url, "dst", "dst")],
        webhook=hook.url,
        post=flaky_post,
    )
    rig.run_until_idle()
    with pytest.raises(WebhookError):
        rig.apply()
    answers["status"] = 200
    (batch,) = rig.emitted
    again = rig.applier.apply(rig.batch_store.read(batch.asset, batch.partition, batch.id))
    assert again.copied == 0 and again.webhook_status == 200
    assert calls == [["s3://dst/a", "s3://dst/b"], ["s3://dst/a", "s3://dst/b"]]
    rig.apply()
    assert len(calls) == 2 and len(hook.requests) == 2


def test_stale_temp_files_of_a_killed_writer_are_swept(tmp_path, buckets, s3_server) -> None:
    s3 = buckets
    put(s3, "src", "dir/a")
    folder = tmp_path / "folder"
    (folder / "dir").mkdir(parents=True)
    stale, fresh = folder / "dir" / ".tmp-dead", folder / "dir" / ".tmp-busy"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"in progress")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [FilesystemStoreConfig(name="folder", path=str(folder))])
    rig.run_until_idle()
    rig.apply()
    assert not stale.exists() and fresh.exists() and (folder / "dir" / "a").is_file()


def test_large_streamed_copy_passes_the_check_and_is_found_present_again(tmp_path, buckets, s3_server) -> None:
    """A streamed copy above the multipart threshold has an `md5-N` ETag unlike the source's MD5: the
    check must not call that a mismatch, and a snapshot backfill must not copy the object again."""
    s3 = buckets
    body = os.urandom(17 * 1024 * 1024)
    s3.put_object(Bucket="src", Key="big.bin", Body=body)
    other = s3_server.endpoint_url.replace("127.0.0.1", "localhost")
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(other, "dst", "dst")])
    rig.run_until_idle()
    assert rig.apply().copied == 1
    assert "-" in s3.head_object(Bucket="dst", Key="big.bin")["ETag"]
    outcome = destinations_match("wf", [rig.emitted[0]], rig.source, rig.destinations, rig.ledger)
    assert outcome.passed, outcome.problems
    (batch,) = resync_batches(rig.workflow, "all", rig.source, rig.ledger, time.time())
    again = rig.applier.apply(batch, resync=True)
    assert again.copied == 0 and again.already_present == 1


def test_folder_placeholder_keys_become_folders(tmp_path, buckets, s3_server) -> None:
    """`dir/` (what S3 consoles create for a folder) is a directory in a folder destination, not a
    file that would block `dir/a.txt`; deleting it removes the directory only when it is empty."""
    s3 = buckets
    for key in ("dir/", "dir/a.txt", "empty/"):
        put(s3, "src", key, b"" if key.endswith("/") else b"a")
    folder = tmp_path / "folder"
    rig = SyncRig(
        tmp_path,
        s3_config(s3_server.endpoint_url, "src", "src"),
        [FilesystemStoreConfig(name="folder", path=str(folder), deletes=True)],
    )
    rig.run_until_idle()
    result = rig.apply()
    assert result.failures == [] and result.copied == 3
    assert (folder / "dir" / "a.txt").read_bytes() == b"a" and (folder / "empty").is_dir()
    assert destinations_match("wf", [rig.emitted[0]], rig.source, rig.destinations, rig.ledger).passed
    s3.delete_object(Bucket="src", Key="dir/")
    s3.delete_object(Bucket="src", Key="empty/")
    rig.emitted.clear()
    assert sorted(rig.run_until_idle()) == [("delete", "dir/"), ("delete", "empty/")]
    assert rig.apply().deleted_in_destinations == 2
    assert not (folder / "empty").exists() and (folder / "dir" / "a.txt").is_file()


def test_the_check_uses_what_the_run_saw_and_lists_only_the_rest(tmp_path, buckets, s3_server) -> None:
    """Copies (CopyObject's answer) and objects the run's listing found are not listed again by the
    check; a destination object the run did not see is."""
    s3 = buckets
    for key in ("a", "b", "c"):
        put(s3, "src", key, key.encode())
    put(s3, "dst", "c", b"c")  # already there: found by the run's listing
    rig = SyncRig(tmp_path, s3_config(s3_server.endpoint_url, "src", "src"), [s3_config(s3_server.endpoint_url, "dst", "dst")])
    rig.run_until_idle()
    (batch,) = rig.emitted
    result = rig.applier.apply(rig.batch_store.read(batch.asset, batch.partition, batch.id))
    assert result.copied == 2 and result.already_present == 1 and set(result.observed) == {("dst", "a"), ("dst", "b"), ("dst", "c")}
    listings: list[str] = []
    rig.destinations[0].store.client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: listings.append("list"))
    assert destinations_match("wf", [batch], rig.source, rig.destinations, rig.ledger, result.observed).passed
    assert listings == []
    # without the run's observations (a later look), the destination is listed and a loss is found
    s3.delete_object(Bucket="dst", Key="b")
    outcome = destinations_match("wf", [batch], rig.source, rig.destinations, rig.ledger)
    assert listings == ["list"] and outcome.problems == ["b -> dst: missing"]
