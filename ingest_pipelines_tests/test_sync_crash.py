"""Crash safety: kill -9 a process syncing 1,000 objects at random moments, restart it, and the
destinations equal the source with no duplicates (ledger rows, webhook deliveries)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.testing.http_server import Response
from ingest_pipelines_tests.conftest import subprocess_env
from ingest_pipelines_tests.sync_fixtures import bucket_keys

OBJECTS = 1000


def start_driver(settings: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest_pipelines_tests.sync_crash_driver", str(settings)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def kill_at_random(settings: Path, rng: random.Random, trials: int, seconds: tuple[float, float]) -> int:
    """Start the driver `trials` times and kill -9 it after a random time (the schedule of the chaos, not a
    wait for a condition); returns how many times it was killed before it finished."""
    kills = 0
    for _trial in range(trials):
        process = start_driver(settings)
        deadline = time.monotonic() + rng.uniform(*seconds)
        while time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=30)
    return kills


@pytest.mark.slow
def test_kill_9_at_random_points_then_restart(tmp_path, s3, s3_server, http_server) -> None:
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    keys = [f"d{i % 7}/obj {i:04d}+é.txt" for i in range(OBJECTS)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="src", Key=k, Body=k.encode()), keys))
    hook = http_server(lambda request: Response(200, {"ok": True}))
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps(
            {
                "work": str(tmp_path),
                "endpoint": s3_server.endpoint_url,
                "webhook": hook.url,
                "batch_size": 40,
                "page_size": 150,
                "extra_destinations": [
                    {"name": "records", "type": "filesystem-records", "path": str(tmp_path / "records"), "format": "json", "bufferSize": 25}
                ],
            }
        )
    )

    kills = kill_at_random(settings, random.Random(20240501), trials=4, seconds=(0.8, 3.5))
    assert kills >= 2, "the sync finished before it could be killed: make the trials shorter"

    final = start_driver(settings)
    output, _ = final.communicate(timeout=240)
    assert final.returncode == 0 and b"IDLE" in output, output.decode()[-3000:]

    # every destination equals the source
    source = bucket_keys(s3, "src")
    mirror = bucket_keys(s3, "dst")
    assert {k: v for k, v in mirror.items() if not k.startswith("meta/")} == source
    assert {k for k in mirror if k.startswith("meta/")} == {f"meta/{k}.done" for k in source}
    folder = tmp_path / "folder"
    # a kill inside a write can leave a hidden `.tmp-*` file (never a partial file under its real
    # name); runs sweep those once they are a minute old, so only fresh ones can remain here
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
    assert files == {k: k.encode() for k in keys}

    # no duplicates: one applied row per object and destination, each object in exactly one batch
    ledger = SyncLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    rows = list(ledger.applied_rows("crash"))
    per_target = Counter((r.key, r.destination) for r in rows)
    assert set(per_target) == {(k, d) for k in keys for d in ("mirror", "folder", "records")}
    assert max(per_target.values()) == 1
    emitted = Counter(r.key for r in rows if r.destination == "mirror")
    assert set(emitted.values()) == {1}

    # records: each object exactly once over all record files
    records = [json.loads(line) for path in (tmp_path / "records").glob("*.jsonl") for line in path.read_text().splitlines()]
    assert Counter(r["Key"] for r in records) == Counter({k: 1 for k in keys})

    # webhook: every URI delivered under exactly one idempotency key (a repeat, if a kill hit
    # between the POST and its ledger row, carries the same key and the same URIs)
    by_key: dict[str, list[str]] = {}
    for request in hook.requests:
        uris = sorted(request.json())
        key = request.headers["Idempotency-Key"]
        assert by_key.setdefault(key, uris) == uris
    delivered = Counter(uri for uris in by_key.values() for uri in uris)
    objects = {f"s3://dst/{k}" for k in keys} | {(folder / k).as_uri() for k in keys}
    assert {u for u in delivered if not u.endswith(".jsonl")} == objects and set(delivered.values()) == {1}
    assert {u for u in delivered if u.endswith(".jsonl")} == {p.as_uri() for p in (tmp_path / "records").glob("*.jsonl")}


@pytest.mark.slow
def test_events_mode_a_message_is_deleted_only_after_its_change_is_committed(tmp_path, s3, s3_server) -> None:
    """kill -9 while ticks receive S3 events: every change whose message left the queue is in a committed
    batch (and applied in the end); the others are still in the queue, to be received again."""
    sqs = s3_server.client("sqs")
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")
    queue = sqs.create_queue(QueueName="crash-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket="src",
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
    )
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"work": str(tmp_path), "endpoint": s3_server.endpoint_url, "batch_size": 8, "page_size": 20, "queue_url": queue})
    )
    first = start_driver(settings)  # the (empty) snapshot, then events mode
    output, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and b"IDLE" in output, output.decode()[-3000:]

    keys = [f"e{i % 5}/obj {i:03d}+é" for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket="src", Key=k, Body=k.encode()), keys))
    kills = kill_at_random(settings, random.Random(7), trials=5, seconds=(0.5, 2.5))
    assert kills >= 2, "the driver finished before it could be killed: make the trials shorter"

    # the invariant at this moment: a change is committed, or its message is still in the queue
    ledger = SyncLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    committed = set(ledger.index_get("crash", keys))
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )
    in_queue = sum(int(v) for v in attributes["Attributes"].values())
    assert len(set(keys) - committed) <= in_queue, (len(set(keys) - committed), in_queue)

    # and once the messages a killed tick held come back (their visibility timeout), everything is applied
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "keep_running": True}))
    final = start_driver(settings)

    def applied_everywhere() -> bool:
        return bucket_keys(s3, "dst").keys() >= set(keys)

    deadline = time.monotonic() + 150
    while not applied_everywhere() and time.monotonic() < deadline:
        time.sleep(1)  # poll interval of a bounded wait
    final.send_signal(signal.SIGKILL)
    final.wait(timeout=30)
    assert {k for k in bucket_keys(s3, "dst") if not k.startswith("meta/")} == set(keys)
    rows = Counter((r.key, r.destination) for r in ledger.applied_rows("crash"))
    assert set(rows.values()) == {1} and len(rows) == 2 * len(keys)
