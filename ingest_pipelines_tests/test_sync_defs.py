"""The sync workflow through Dagster: sensor ticks (cursor in, cursor out), the apply runs that drain every
pending batch, reconciliation of failed, dead and never-started runs (backoff, maxAttempts, the
`batches_applied` check), backfills of a changes hour and of a snapshot shard, metadata and asset checks,
on a real instance and the moto server."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.sync import ledger as ledger_tables
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines_tests.conftest import subprocess_env
from ingest_pipelines_tests.sync_fixtures import bucket_keys, put

SENSOR = "s3_mirror__sync_sensor"
APPLY_JOB = "s3_mirror__apply_job"


def sync_config(endpoint: str, tmp_path: Path, deletes: bool = False, **workflow: Any) -> dict[str, Any]:
    store = {"type": "s3", "endpoint": endpoint, "region": "us-east-1"}
    return {
        "sources": [{"name": "src", "bucket": "src", "prefix": "in/", **store}],
        "destinations": [
            {"name": "mirror", "bucket": "dst", **store, "metafilesPrefix": "meta/", "deletes": deletes},
            {"name": "folder", "type": "filesystem", "path": str(tmp_path / "folder"), "deletes": deletes},
        ],
        "workflows": [{"name": "s3-mirror", "source": "src", "destinations": ["mirror", "folder"], "settleDelay": "0s", **workflow}],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
    }


@pytest.fixture
def make_defs(s3, s3_server, tmp_path, write_config):
    s3.create_bucket(Bucket="src")
    s3.create_bucket(Bucket="dst")

    def make(**workflow: Any) -> dg.Definitions:
        options = {"batchSize": 3, "interval": "1ms", **workflow}  # a listing pass at every tick
        return build_definitions(load_config(write_config(sync_config(s3_server.endpoint_url, tmp_path, **options))))

    return make


@pytest.fixture
def defs(make_defs) -> dg.Definitions:
    return make_defs()


def ledger(tmp_path: Path) -> SyncLedger:
    return SyncLedger(f"sqlite:///{tmp_path / 'state' / 'sync-ledger.sqlite'}")


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None) -> Any:
    """One evaluation the way the daemon does it: run_requests, cursor, skip_message, asset_events; the
    dynamic partitions it asks for are added to the instance, as the daemon does before launching runs."""
    sensor = defs.resolve_sensor_def(SENSOR)
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, repository_def=defs.get_repository_def()
    ) as context:
        result = sensor.evaluate_tick(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(request.job_name)
    return job.execute_in_process(
        run_config=request.run_config, partition_key=request.partition_key, instance=instance, tags=request.tags, raise_on_error=False
    )


def materializations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(asset, partition) -> metadata of each materialization of the run."""
    out = {}
    for event in result.get_asset_materialization_events():
        mat = event.materialization
        out[(mat.asset_key.path[-1], mat.partition)] = {k: v.value for k, v in mat.metadata.items()}
    return out


def checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest_pipelines.cli", *args], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )


def age_attempts(tmp_path: Path, seconds: float) -> None:
    """Move every batch's last attempt and request `seconds` into the past (as if that much time had gone by)."""
    table = ledger_tables.batches
    with ledger(tmp_path).engine.begin() as conn:
        for column in (table.c.last_attempt_at, table.c.last_request_at):
            conn.execute(table.update().where(column.is_not(None)).values({column.name: column - seconds}))


def test_one_run_applies_every_pending_batch_and_materializes_each_partition(defs, instance, s3, tmp_path) -> None:
    for i in range(5):
        put(s3, "src", f"in/f{i}.txt", f"{i}".encode())
    first = tick(defs, instance, None)
    (request,) = first.run_requests  # 5 objects in 2 batches (batchSize 3): one run for both
    assert request.job_name == APPLY_JOB and request.partition_key is None
    assert request.tags["ingest/serial"] == "s3_mirror" and request.tags["dagster/max_retries"] == "0"
    assert SyncCursor.from_json(first.cursor).mode == "cdc"
    assert len(ledger(tmp_path).pending_batches("s3-mirror")) == 2
    result = execute(defs, instance, request)
    assert result.success
    meta = materializations(result)[("snapshot", "all")]
    assert meta["batches"] == 2 and meta["objects"] == 5 and meta["snapshots"] == 5 and meta["failed_batches"] == 0
    assert len(meta["batch_ids"].splitlines()) == 2
    assert meta["position_from"].startswith("f") and "_s" in meta["position_to"]
    assert meta["lag_seconds"] >= 0 and meta["duration_seconds"] >= 0
    assert checks(result) == {"destination_matches_batch": True, "no_duplicate_records": True}
    assert set(bucket_keys(s3, "dst")) == {f"f{i}.txt" for i in range(5)} | {f"meta/f{i}.txt.done" for i in range(5)}
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == [f"f{i}.txt" for i in range(5)]
    assert ledger(tmp_path).pending_batches("s3-mirror") == []
    assert dg.AssetKey(["s3_mirror", "snapshot"]) in {e.asset_key for e in result.get_asset_materialization_events()}
    assert instance.get_materialized_partitions(dg.AssetKey(["s3_mirror", "snapshot"])) == {"all"}

    idle = tick(defs, instance, first.cursor)
    assert not idle.run_requests and "no changes" in str(idle.skip_message)

    put(s3, "src", "in/f0.txt", b"changed")
    put(s3, "src", "in/new.txt", b"new")
    changes = tick(defs, instance, idle.cursor)
    (request,) = changes.run_requests
    # the hour of the committed changes becomes a partition of the changes asset (shown as missing until applied)
    (added,) = changes.dynamic_partitions_requests
    assert added.partitions_def_name == "s3_mirror__hours" and len(added.partition_keys) == 1
    result = execute(defs, instance, request)
    ((asset, hour), meta) = next(iter(materializations(result).items()))
    assert asset == "changes" and [hour] == list(added.partition_keys) and hour.endswith(":00")
    assert instance.get_dynamic_partitions("s3_mirror__hours") == [hour]
    assert (meta["creates"], meta["updates"], meta["copied"]) == (1, 1, 4)
    assert s3.get_object(Bucket="dst", Key="f0.txt")["Body"].read() == b"changed"
    assert instance.get_materialized_partitions(dg.AssetKey(["s3_mirror", "changes"])) == {hour}


def test_no_second_run_while_one_is_queued_or_in_progress(defs, instance, s3, tmp_path) -> None:
    put(s3, "src", "in/a", b"a")
    first = tick(defs, instance, None)
    (request,) = first.run_requests
    # the run exists but has not started (as the run queue holds it)
    job = defs.resolve_job_def(APPLY_JOB)
    queued = instance.create_run_for_job(job, tags=request.tags, status=dg.DagsterRunStatus.NOT_STARTED)
    second = tick(defs, instance, first.cursor)
    assert not second.run_requests
    assert f"run {queued.run_id} (NOT_STARTED) is queued to apply; 1 batch(es) pending" in second.skip_message
    # it died (canceled before it started): the batch is requested again once its try is due
    instance.report_run_canceled(queued)
    assert not tick(defs, instance, second.cursor).run_requests  # the unstarted run counted as a try: backoff
    age_attempts(tmp_path, 31)
    (again,) = tick(defs, instance, second.cursor).run_requests
    assert again.run_key != request.run_key
    assert execute(defs, instance, again).success
    assert bucket_keys(s3, "dst")["a"]


def test_a_failed_batch_is_retried_with_backoff_until_it_applies(make_defs, instance, s3, s3_server, tmp_path) -> None:
    defs = make_defs(retryDelay="30s")
    put(s3, "src", "in/x.txt", b"x")
    # a folder where the file must go: the change cannot be applied until it is removed
    (tmp_path / "folder" / "x.txt").mkdir(parents=True)
    first = tick(defs, instance, None)
    failed = execute(defs, instance, first.run_requests[0])
    assert not failed.success
    failure = failed.failure_data_for_node("s3_mirror__apply").error.message
    assert "1 batch(es) failed" in failure and "x.txt -> folder" in failure
    (pending,) = ledger(tmp_path).pending_batches("s3-mirror")
    assert pending.attempts == 1 and "x.txt -> folder" in (pending.last_error or "")
    # the mirror got its copy: only the folder's change is missing, and the run's check says so
    assert "x.txt" in bucket_keys(s3, "dst") and checks(failed)["destination_matches_batch"] is False

    waiting = tick(defs, instance, first.cursor)
    assert not waiting.run_requests
    assert "1 batch(es) wait for a retry" in waiting.skip_message and "x.txt -> folder" in waiting.skip_message
    age_attempts(tmp_path, 31)  # the first retry is due after retryDelay
    (retry,) = tick(defs, instance, waiting.cursor).run_requests
    assert not execute(defs, instance, retry).success  # still a folder there: attempt 2 fails
    age_attempts(tmp_path, 31)
    assert not tick(defs, instance, waiting.cursor).run_requests  # now it waits twice as long
    age_attempts(tmp_path, 30)
    (third,) = tick(defs, instance, waiting.cursor).run_requests
    (tmp_path / "folder" / "x.txt").rmdir()
    result = execute(defs, instance, third)
    assert result.success and (tmp_path / "folder" / "x.txt").read_bytes() == b"x"
    assert ledger(tmp_path).pending_batches("s3-mirror") == []


def test_a_batch_past_max_attempts_fails_the_check_loudly_and_is_not_retried(make_defs, instance, s3, tmp_path) -> None:
    defs = make_defs(retryDelay="1s", maxAttempts=2)
    put(s3, "src", "in/x.txt", b"x")
    (tmp_path / "folder" / "x.txt").mkdir(parents=True)
    result = tick(defs, instance, None)
    evaluations = {(e.asset_key.path[-1], e.check_name): e for e in result.asset_events}
    assert evaluations[("snapshot", "batches_applied")].passed  # a fresh batch is not stuck
    cursor = result.cursor
    for _ in range(2):
        (request,) = result.run_requests
        assert not execute(defs, instance, request).success
        age_attempts(tmp_path, 3600)
        result = tick(defs, instance, cursor)
        cursor = result.cursor
    assert not result.run_requests  # two attempts failed: no third
    assert "failed 2 attempts and are no longer retried" in result.skip_message and "x.txt -> folder" in result.skip_message
    stuck = {(e.asset_key.path[-1], e.check_name): e for e in result.asset_events}[("snapshot", "batches_applied")]
    assert not stuck.passed and stuck.severity == dg.AssetCheckSeverity.ERROR
    assert stuck.metadata["exhausted_batches"].value == 1
    # the next tick repeats nothing (the check stays failed) and requests nothing
    quiet = tick(defs, instance, cursor)
    assert not quiet.run_requests and not quiet.asset_events
    # what the user sees on the command line, and how to un-stick it (documented): fix the destination,
    # then `ingest-pipelines sync retry`; the next tick requests a run
    status = cli("sync", "status", "--config", str(tmp_path / "ingest.yaml"))
    assert status.returncode == 1 and '"converging": false' in status.stdout and '"exhausted": [' in status.stdout, status
    (tmp_path / "folder" / "x.txt").rmdir()
    retried = cli("sync", "retry", "--workflow", "s3-mirror", "--config", str(tmp_path / "ingest.yaml"))
    assert retried.returncode == 0 and "1 unapplied batch(es) will be tried again" in retried.stdout, retried
    healed = tick(defs, instance, cursor)
    back = {(e.asset_key.path[-1], e.check_name): e for e in healed.asset_events}[("snapshot", "batches_applied")]
    assert back.passed  # retried again: no longer stuck
    (request,) = healed.run_requests
    assert execute(defs, instance, request).success
    assert not tick(defs, instance, healed.cursor).run_requests


def test_a_batch_unapplied_beyond_max_lag_fails_the_check(make_defs, instance, s3, tmp_path) -> None:
    defs = make_defs(maxLag="60s")
    put(s3, "src", "in/a", b"a")
    first = tick(defs, instance, None)
    table = ledger_tables.batches
    with ledger(tmp_path).engine.begin() as conn:  # committed two minutes ago, never applied
        conn.execute(table.update().values(created_at=sa.literal(time.time() - 120)))
    job = defs.resolve_job_def(APPLY_JOB)
    instance.create_run_for_job(job, tags=first.run_requests[0].tags, status=dg.DagsterRunStatus.NOT_STARTED)  # never started
    stuck = tick(defs, instance, first.cursor)
    evaluation = {(e.asset_key.path[-1], e.check_name): e for e in stuck.asset_events}[("snapshot", "batches_applied")]
    assert not evaluation.passed and "1 batch(es) unapplied for 2 min, oldest s3_mirror-" in evaluation.description
    assert stuck.skip_message.startswith("1 batch(es) unapplied for")
    # the check can be executed from the UI too, reading the ledger now
    key = dg.AssetCheckKey(dg.AssetKey(["s3_mirror", "snapshot"]), "batches_applied")
    (check,) = [c for c in defs.asset_checks if key in c.check_keys]
    on_demand = check()
    assert not on_demand.passed and "unapplied for 2 min" in on_demand.description


def test_an_older_batch_never_moves_a_destination_back(make_defs, instance, s3, tmp_path) -> None:
    s3.put_bucket_versioning(Bucket="src", VersioningConfiguration={"Status": "Enabled"})
    defs = make_defs(batchSize=1, deletes=True)
    cursor = tick(defs, instance, None).cursor  # empty snapshot
    put(s3, "src", "in/k", b"v1")
    first = tick(defs, instance, cursor)
    put(s3, "src", "in/k", b"v2")
    second = tick(defs, instance, first.cursor)
    old, new = [b for b in ledger(tmp_path).pending_batches("s3-mirror")]
    assert old.seq < new.seq
    # the newer batch is applied first (a backfill of its hour with its batch id), then the older one
    job = defs.resolve_job_def("s3_mirror__changes_job")
    for batch in (new, old):
        run = job.execute_in_process(
            partition_key=batch.partition,
            run_config={"ops": {"s3_mirror__changes": {"config": {"batch_id": batch.batch_id}}}},
            instance=instance,
        )
        assert run.success
    assert s3.get_object(Bucket="dst", Key="k")["Body"].read() == b"v2"
    assert (tmp_path / "folder" / "k").read_bytes() == b"v2"
    # and a put then a delete of one key, applied by one run in commit order, end with the key gone everywhere
    s3.delete_object(Bucket="src", Key="in/k")
    third = tick(defs, instance, second.cursor)
    assert execute(defs, instance, third.run_requests[0]).success
    put(s3, "src", "in/j", b"j")
    fourth = tick(defs, instance, third.cursor)
    (request,) = fourth.run_requests
    held = instance.create_run_for_job(defs.resolve_job_def(APPLY_JOB), tags=request.tags, status=dg.DagsterRunStatus.NOT_STARTED)
    s3.delete_object(Bucket="src", Key="in/j")
    fifth = tick(defs, instance, fourth.cursor)
    assert not fifth.run_requests  # the requested run is in the queue: it will apply both
    put_batch, delete_batch = ledger(tmp_path).pending_batches("s3-mirror")
    instance.report_run_canceled(held)
    assert execute(defs, instance, request).success
    assert not {"j", "k", "meta/j.done"} & set(bucket_keys(s3, "dst")) and not (tmp_path / "folder" / "j").exists()
    rows = [(r.batch_id, r.operation) for r in ledger(tmp_path).applied_rows("s3-mirror") if r.key == "j" and r.destination == "mirror"]
    assert rows == [(put_batch.batch_id, "create"), (delete_batch.batch_id, "delete")]


def test_backfill_of_a_changes_hour_reapplies_its_batches(defs, instance, s3) -> None:
    cursor = tick(defs, instance, None).cursor  # empty snapshot
    for i in range(4):
        put(s3, "src", f"in/c{i}", b"x")
    result = tick(defs, instance, cursor)
    (request,) = result.run_requests
    applied = execute(defs, instance, request)
    ((_, hour),) = materializations(applied)
    s3.delete_object(Bucket="dst", Key="c1")
    s3.delete_object(Bucket="dst", Key="meta/c1.done")

    # the hour partition without a batch id: every batch of that hour, idempotently
    job = defs.resolve_job_def("s3_mirror__changes_job")
    backfill = job.execute_in_process(partition_key=hour, instance=instance)
    meta = materializations(backfill)[("changes", hour)]
    assert meta["batches"] == 2 and meta["objects"] == 4 and meta["copied"] == 0
    assert meta["batch_ids"].splitlines() == materializations(applied)[("changes", hour)]["batch_ids"].splitlines()
    # c1 was applied before (the ledger says so), so the re-apply skips it; the check sees the gap
    assert checks(backfill)["destination_matches_batch"] is False


def test_backfill_of_a_snapshot_shard_catches_up_and_is_cheap_when_in_sync(defs, instance, s3, tmp_path) -> None:
    for i in range(4):
        put(s3, "src", f"in/s{i}", b"s")
    for request in tick(defs, instance, None).run_requests:
        execute(defs, instance, request)
    s3.delete_object(Bucket="dst", Key="s2")
    s3.delete_object(Bucket="dst", Key="meta/s2.done")
    (tmp_path / "folder" / "s3").unlink()
    job = defs.resolve_job_def("s3_mirror__snapshot_job")
    meta = materializations(job.execute_in_process(partition_key="all", instance=instance))[("snapshot", "all")]
    assert meta["copied"] == 2 and meta["already_present"] == 6
    assert "s2" in bucket_keys(s3, "dst") and (tmp_path / "folder" / "s3").is_file()
    again = job.execute_in_process(partition_key="all", instance=instance)
    assert materializations(again)[("snapshot", "all")]["copied"] == 0
    assert all(e.passed for e in again.get_asset_check_evaluations())


def test_hours_committed_before_the_upgrade_stay_partitions(defs, instance, s3) -> None:
    cursor = tick(defs, instance, None).cursor
    put(s3, "src", "in/old", b"o")
    committed = tick(defs, instance, cursor)
    (hour,) = committed.dynamic_partitions_requests[0].partition_keys
    # a sensor cursor written before hours were dynamic (the scan cursor alone) and an instance without them
    instance.delete_dynamic_partition("s3_mirror__hours", hour)
    old_cursor = SyncCursor.from_json(committed.cursor).to_json()
    upgraded = tick(defs, instance, old_cursor)
    assert [list(r.partition_keys) for r in upgraded.dynamic_partitions_requests] == [[hour]]
    assert instance.get_dynamic_partitions("s3_mirror__hours") == [hour]
    assert not tick(defs, instance, upgraded.cursor).dynamic_partitions_requests  # once
