"""The sample config's sync workflows as Dagster sees them: assets, partitions, checks, jobs, sensors."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.defs import build_definitions

SAMPLE = Path(__file__).parent / "data" / "sample_sync.yaml"


@pytest.fixture
def defs(monkeypatch) -> dg.Definitions:
    monkeypatch.setenv("SAMPLE_KEY", "k")
    monkeypatch.setenv("SAMPLE_SECRET", "s")
    return build_definitions(load_config(SAMPLE))


def test_sample_sync_workflows_build(defs) -> None:
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"foo_1_bar_1/snapshot", "foo_1_bar_1/changes", "sharded_mirror/snapshot", "sharded_mirror/changes"} <= keys

    snapshot = defs.resolve_assets_def(dg.AssetKey(["sharded_mirror", "snapshot"]))
    assert snapshot.partitions_def.get_partition_keys() == ["images/", "docs/"]
    single = defs.resolve_assets_def(dg.AssetKey(["foo_1_bar_1", "snapshot"]))
    assert single.partitions_def.get_partition_keys() == ["all"]
    changes = defs.resolve_assets_def(dg.AssetKey(["sharded_mirror", "changes"]))
    # the hours that had changes, added by the sensor: no years of empty partitions
    assert isinstance(changes.partitions_def, dg.DynamicPartitionsDefinition)
    assert changes.partitions_def.name == "sharded_mirror__hours"
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    for dname in ("foo_1_bar_1", "sharded_mirror"):
        for asset in ("snapshot", "changes"):
            assert (f"{dname}/{asset}", "destination_matches_batch") in checks
            assert (f"{dname}/{asset}", "no_duplicate_records") in checks

    for dname in ("foo_1_bar_1", "sharded_mirror"):
        for job in ("snapshot", "changes"):
            assert defs.resolve_job_def(f"{dname}__{job}_job").tags["ingest/serial"] == dname

    stopped = defs.resolve_sensor_def("foo_1_bar_1__sync_sensor")
    running = defs.resolve_sensor_def("sharded_mirror__sync_sensor")
    assert stopped.default_status == dg.DefaultSensorStatus.STOPPED and stopped.minimum_interval_seconds == 14
    assert running.default_status == dg.DefaultSensorStatus.RUNNING and running.minimum_interval_seconds == 14
    assert {target.job_name for target in running.targets} == {
        "sharded_mirror__apply_job",
        "sharded_mirror__snapshot_job",
        "sharded_mirror__changes_job",
    }


def test_secrets_stay_env_vars_in_resources(defs) -> None:
    resource = defs.resources["source_foo_1"]
    assert resource.aws_access_key_id == dg.EnvVar("SAMPLE_KEY")
    assert resource.aws_secret_access_key == dg.EnvVar("SAMPLE_SECRET")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shards": ["a/", "a/"]}, "a shard prefix is listed twice"),
        ({"changesStart": "yesterday"}, "must be a date YYYY-MM-DD"),
        ({"pageSize": 5000}, "pageSize"),
        ({"tickSeconds": "10m"}, "field 'tickSeconds': .*at most 45s"),
        ({"webhook": "hooks.local/ingest"}, "field 'webhook': .*not an http\\(s\\) URL"),
        ({"shards": ["2024...2025/"]}, "field 'shards': .*cannot be a Dagster partition key"),
    ],
)
def test_bad_sync_options_are_named(write_config, change, message) -> None:
    doc = {
        "sources": [{"name": "s", "type": "filesystem", "path": "/tmp/x"}],
        "destinations": [{"name": "d", "type": "filesystem", "path": "/tmp/y"}],
        "workflows": [{"name": "w", "source": "s", "destinations": ["d"], **change}],
    }
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(doc))


def test_events_mode_without_queue_is_a_config_error(write_config) -> None:
    doc = {
        "sources": [{"name": "s", "type": "s3", "bucket": "b", "changes": "events"}],
        "destinations": [{"name": "d", "type": "filesystem", "path": "/tmp/y"}],
        "workflows": [{"name": "w", "source": "s", "destinations": ["d"]}],
    }
    with pytest.raises(ConfigError, match=r"sources\[0\] \(s\): field 'queueUrl': .*required with `changes: events`"):
        load_config(write_config(doc))
