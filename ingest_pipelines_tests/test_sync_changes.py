"""Change detection against the moto S3 server: snapshot, CDC (unversioned and versioned), prefix
filtering, resumed snapshots, same-second objects, the settle delay and events mode via SQS."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from ingest_pipelines.positions import Position, SyncCursor
from ingest_pipelines_tests.sync_fixtures import SyncRig, put, s3_config, wait_for_second_start


def make_rig(tmp_path: Path, s3, server, prefix: str = "", versioned: bool = False, **options) -> SyncRig:
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    if versioned:
        s3.put_bucket_versioning(Bucket="src", VersioningConfiguration={"Status": "Enabled"})
    source = s3_config(server.endpoint_url, "src", "src", prefix)
    dest = s3_config(server.endpoint_url, "dst", "dst", deletes=True)
    return SyncRig(tmp_path, source, [dest], **options)


def test_snapshot_of_five_then_cdc_of_three_puts(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server)
    for i in range(5):
        put(s3, "src", f"obj{i}.txt", f"v{i}".encode())
    first = rig.tick()
    assert sorted(rig.changes(first)) == [("snapshot", f"obj{i}.txt") for i in range(5)]
    assert {b.asset for b in first.batches} == {"snapshot"} and {b.partition for b in first.batches} == {"all"}
    positions = [Position.parse(c.position) for b in first.batches for c in b.changes]
    assert {p.mode for p in positions} == {"s"} and [p.key for p in positions] == [f"obj{i}.txt" for i in range(5)]
    assert SyncCursor.from_json(rig.cursor).mode == "cdc"

    assert rig.run_until_idle() == []  # a full CDC pass with nothing new
    for key in ("new1", "new2", "obj0.txt"):
        put(s3, "src", key, b"changed")
    changes = rig.run_until_idle()
    assert sorted(changes) == [("create", "new1"), ("create", "new2"), ("update", "obj0.txt")]
    batch = rig.emitted[-1]
    assert batch.asset == "changes" and batch.partition.endswith(":00")
    assert Position.parse(batch.position_from).mode == "c" and batch.position_to.startswith("obj0.txt_c")
    assert rig.run_until_idle() == []


def test_unversioned_delete_is_found_through_the_key_index(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server)
    put(s3, "src", "keep")
    put(s3, "src", "gone")
    rig.run_until_idle()
    s3.delete_object(Bucket="src", Key="gone")
    assert rig.run_until_idle() == [("delete", "gone")]
    assert rig.ledger.index_count("wf") == 1
    assert rig.run_until_idle() == []


def test_versioned_update_and_delete(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, versioned=True)
    first = put(s3, "src", "doc", b"v1")
    put(s3, "src", "other", b"o")
    assert sorted(rig.run_until_idle()) == [("snapshot", "doc"), ("snapshot", "other")]
    second = put(s3, "src", "doc", b"v2")
    s3.delete_object(Bucket="src", Key="other")
    put(s3, "src", "fresh", b"f")
    changes = rig.run_until_idle()
    assert sorted(changes) == [("create", "fresh"), ("delete", "other"), ("update", "doc")]
    update = next(c for b in rig.emitted for c in b.changes if c.operation == "update")
    assert update.version_id == second["VersionId"] != first["VersionId"]
    delete = next(c for b in rig.emitted for c in b.changes if c.operation == "delete")
    assert delete.version_id  # the delete marker's version
    assert rig.run_until_idle() == []


def test_versioned_key_listed_across_pages(tmp_path, s3, s3_server) -> None:
    """A key whose versions span a page boundary is decided once, from its latest version."""
    rig = make_rig(tmp_path, s3, s3_server, versioned=True, pageSize=2)
    for body in (b"1", b"2", b"3"):
        put(s3, "src", "a", body)
    put(s3, "src", "b", b"b")
    assert sorted(rig.run_until_idle()) == [("snapshot", "a"), ("snapshot", "b")]
    put(s3, "src", "b", b"b2")
    assert rig.run_until_idle() == [("update", "b")]


def test_prefix_filtering(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, prefix="in/")
    put(s3, "src", "in/a")
    put(s3, "src", "in/sub/b")
    put(s3, "src", "out/c")
    put(s3, "src", "inside")  # shares the characters but not the folder
    assert sorted(rig.run_until_idle()) == [("snapshot", "a"), ("snapshot", "sub/b")]
    put(s3, "src", "out/d")
    s3.delete_object(Bucket="src", Key="out/c")
    assert rig.run_until_idle() == []


def test_restart_mid_snapshot_emits_nothing_twice(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, pageSize=2, maxPagesPerTick=1)
    keys = [f"k{i:02d}" for i in range(7)]
    for key in keys:
        put(s3, "src", key)
    first = rig.tick()
    assert rig.changes(first) == [("snapshot", "k00"), ("snapshot", "k01")]
    cursor_after_first = rig.cursor

    # a restarted process: new stores, ledger and state re-opened from disk, the saved cursor
    again = SyncRig(tmp_path, rig.source.config, [d.config for d in rig.destinations], pageSize=2, maxPagesPerTick=1)
    again.cursor = cursor_after_first
    second = again.tick()
    assert again.changes(second) == [("snapshot", "k02"), ("snapshot", "k03")]

    # Dagster lost the last cursor (crash after our commit): the scan state is the ledger's, so the
    # tick continues where the commit left it; the committed batches stay pending until applied
    again.cursor = cursor_after_first
    third = again.tick()
    assert again.changes(third) == [("snapshot", "k04"), ("snapshot", "k05")]
    assert [b.batch_id for b in again.ledger.pending_batches("wf")] == [b.id for b in first.batches + second.batches + third.batches]
    seen = [c for b in first.batches + second.batches + third.batches for c in b.changes]
    rest = again.run_until_idle()
    all_keys = [c.key for c in seen] + [k for op, k in rest if op == "snapshot"]
    assert sorted(all_keys) == keys
    assert len(all_keys) == len(set(all_keys))


def test_tick_is_bounded_by_pages_and_resumes(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, pageSize=3, maxPagesPerTick=2)
    for i in range(10):
        put(s3, "src", f"k{i}")
    outcome = rig.tick()
    assert outcome.pages == 2 and len(rig.changes(outcome)) == 6
    assert SyncCursor.from_json(rig.cursor).after == "k5"
    assert len(rig.changes(rig.tick())) == 4
    # the time budget: a tick that is out of time after one page stops there and resumes
    hurried = make_rig(tmp_path / "hurried", s3, s3_server, pageSize=3, tickSeconds=0.001)
    outcome = hurried.tick()
    assert outcome.pages == 1 and SyncCursor.from_json(hurried.cursor).after == "k2"


def test_two_objects_in_the_watermark_second_split_across_ticks(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server)
    rig.run_until_idle()
    for _attempt in range(10):
        wait_for_second_start()
        a = put(s3, "src", f"z-late-{_attempt}")  # sorts after the next key, written first
        first = rig.tick()
        b = put(s3, "src", f"a-early-{_attempt}")
        lm_a = s3.head_object(Bucket="src", Key=f"z-late-{_attempt}")["LastModified"]
        lm_b = s3.head_object(Bucket="src", Key=f"a-early-{_attempt}")["LastModified"]
        if int(lm_a.timestamp()) == int(lm_b.timestamp()):
            break
        rig.run_until_idle()  # a slow machine missed the second: take this pair in, try again
    assert a and b and int(lm_a.timestamp()) == int(lm_b.timestamp()), "could not write two objects within one second"
    assert rig.changes(first) == [("create", f"z-late-{_attempt}")]
    mark = SyncCursor.from_json(rig.cursor).watermark
    assert mark.second == int(lm_a.timestamp()) and mark.covers(mark.second, f"z-late-{_attempt}")
    # the second object shares the watermark's second and sorts below its key: still emitted, once
    assert rig.run_until_idle() == [("create", f"a-early-{_attempt}")]
    assert rig.run_until_idle() == []


def test_settle_delay_defers_young_objects(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, settleDelay=30)
    rig.run_until_idle()
    put(s3, "src", "young")
    lm = s3.head_object(Bucket="src", Key="young")["LastModified"].timestamp()
    assert rig.changes(rig.tick(clock=lambda: lm + 5)) == []
    assert rig.changes(rig.tick(clock=lambda: lm + 31)) == [("create", "young")]
    assert rig.changes(rig.tick(clock=lambda: lm + 60)) == []


def test_shards_split_the_snapshot(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, shards=["a/", "b/"])
    for key in ("a/1", "a/2", "b/1", "c/1"):
        put(s3, "src", key)
    first = rig.tick()
    by_shard = {(b.partition, c.key) for b in first.batches for c in b.changes}
    assert by_shard == {("a/", "a/1"), ("a/", "a/2"), ("b/", "b/1")}
    # a key outside every shard arrives through change capture
    assert rig.run_until_idle() == [("create", "c/1")]


def test_events_mode_through_sqs(tmp_path, s3, s3_server) -> None:
    sqs = s3_server.client("sqs")
    queue = sqs.create_queue(QueueName="src-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    put(s3, "src", "p/existing")
    s3.put_bucket_notification_configuration(
        Bucket="src",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
    )
    source = s3_config(s3_server.endpoint_url, "src", "src", "p/", changes="events", queueUrl=queue)
    rig = SyncRig(tmp_path, source, [s3_config(s3_server.endpoint_url, "dst", "dst")])
    assert rig.changes(rig.tick()) == [("snapshot", "existing")]
    odd = "dir/a b+c%20é//x.txt"
    put(s3, "src", "p/" + odd, b"1")
    put(s3, "src", "p/existing", b"2")
    put(s3, "src", "elsewhere", b"3")
    s3.delete_object(Bucket="src", Key="p/" + odd)
    put(s3, "src", "p/" + odd, b"again")
    outcome = rig.tick()
    assert sorted(rig.changes(outcome)) == [("create", odd), ("update", "existing")]
    assert outcome.pages == 0 and outcome.messages >= 5
    # messages were deleted after the commit; redelivery would change nothing either
    assert sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []) == []
    s3.delete_object(Bucket="src", Key="p/existing")
    assert rig.changes(rig.tick()) == [("delete", "existing")]
    # a replayed event for a key already known changes nothing
    body = {"Records": [{"s3": {"bucket": {"name": "src"}, "object": {"key": "p/dir/a+b%2Bc%2520%C3%A9//x.txt"}}}]}
    sqs.send_message(QueueUrl=queue, MessageBody=orjson.dumps(body).decode())
    assert rig.changes(rig.tick()) == []


def test_events_tick_is_bounded_and_leaves_the_rest_in_the_queue(tmp_path, s3, s3_server) -> None:
    """A burst of events larger than one tick's time is taken a part per tick (never past the budget,
    which would hit Dagster's sensor timeout); the rest returns to the queue at once, nothing is lost."""
    sqs = s3_server.client("sqs")
    queue = sqs.create_queue(QueueName="burst-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    s3.put_bucket_notification_configuration(
        Bucket="src",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]},
    )
    source = s3_config(s3_server.endpoint_url, "src", "src", changes="events", queueUrl=queue)
    rig = SyncRig(tmp_path, source, [s3_config(s3_server.endpoint_url, "dst", "dst")], tickSeconds=0.001, threads=2)
    rig.tick()  # the (empty) snapshot
    keys = [f"k{i:02d}" for i in range(30)]
    for key in keys:
        put(s3, "src", key)
    seen: list[tuple[str, str]] = []
    for _ in range(30):
        outcome = rig.tick()
        assert len(rig.changes(outcome)) < len(keys)  # one tick never takes the whole burst here
        seen.extend(rig.changes(outcome))
        if len(seen) == len(keys):
            break
    assert sorted(seen) == [("create", key) for key in keys]
    assert rig.changes(rig.tick()) == []
    assert sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []) == []


def test_listing_passes_start_interval_apart_while_ticks_come_more_often(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, interval="5m", pageSize=2, maxPagesPerTick=1)
    for key in ("a", "b", "c"):
        put(s3, "src", key)
    start = time.time()
    clock = {"now": start}
    tick = lambda: rig.tick(clock=lambda: clock["now"])  # noqa: E731
    assert rig.changes(tick()) == [("snapshot", "a"), ("snapshot", "b")]
    assert rig.changes(tick()) == [("snapshot", "c")]  # the snapshot goes on at every tick
    done = tick()
    assert "snapshot finished; change capture starts in 300s" in done.skip_reason
    put(s3, "src", "d")
    clock["now"] = start + 60
    waiting = tick()
    assert waiting.pages == 0 and "change capture: next pass in 240s" in waiting.skip_reason
    clock["now"] = start + 301
    first_page = tick()  # a pass starts, and goes on at every tick until it is complete
    clock["now"] = start + 302
    second_page = tick()
    assert first_page.pages == second_page.pages == 1
    assert rig.changes(first_page) + rig.changes(second_page) == [("create", "d")]
    clock["now"] = start + 310
    assert tick().pages == 0  # complete: the next pass waits for 301 + 300


def test_a_pass_due_within_a_second_starts_at_this_tick(tmp_path, s3, s3_server) -> None:
    rig = make_rig(tmp_path, s3, s3_server, interval="5s")
    put(s3, "src", "a")
    start = time.time()
    clock = {"now": start}
    tick = lambda: rig.tick(clock=lambda: clock["now"])  # noqa: E731
    assert rig.changes(tick()) == [("snapshot", "a")]
    assert "next pass in 5s" in tick().skip_reason  # the snapshot (one page) was the first pass
    put(s3, "src", "b")
    # Dagster's sensor loop brings the next tick ~5 s later, give or take milliseconds: 4.99 s is this pass's tick
    clock["now"] = start + 4.99
    assert rig.changes(tick()) == [("create", "b")]
    put(s3, "src", "c")
    clock["now"] = start + 4.99 + 3.0  # 2 s early: not yet
    waiting = tick()
    assert waiting.pages == 0 and "change capture: next pass in 2s" in waiting.skip_reason
    clock["now"] = start + 4.99 + 4.5
    assert rig.changes(tick()) == [("create", "c")]
