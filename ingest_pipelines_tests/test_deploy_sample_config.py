"""deploy/ingest.example.yaml loads with its environment and builds the code location: the sync
workflow's assets, checks, jobs and sensor, its jobs on the Celery executor, op outputs in S3."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3PickleIOManager

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines_tests.conftest import REPO_ROOT

ENVIRONMENT = {
    "INGEST_LANDING_BUCKET": "acme-landing",
    "INGEST_ARCHIVE_BUCKET": "acme-archive",
    "INGEST_STATE_BUCKET": "acme-ingest-state",
    "CELERY_BROKER": "redis://redis:6379/0",
    "CELERY_BACKEND": "redis://redis:6379/1",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "pg-secret",
    "DAGSTER_PG_HOST": "db.internal",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_DB": "ingest_dagster",
}


def test_example_config_builds_sync_defs_on_celery_with_s3_io(monkeypatch) -> None:
    for key, value in ENVIRONMENT.items():
        monkeypatch.setenv(key, value)
    config = load_config(REPO_ROOT / "deploy" / "ingest.example.yaml")
    defs = build_definitions(config)
    dname = "landing_archive"
    assets = {key for spec in defs.resolve_all_asset_specs() for key in [spec.key]}
    assert {dg.AssetKey([dname, "snapshot"]), dg.AssetKey([dname, "changes"])} <= assets
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert checks >= {"destination_matches_batch", "no_duplicate_records"}
    sensor = defs.resolve_sensor_def(f"{dname}__sync_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 14
    for job in (f"{dname}__apply_job", f"{dname}__snapshot_job", f"{dname}__changes_job"):
        assert defs.resolve_job_def(job).executor_def.name == "ingest_celery"
    manager = defs.resources["io_manager"]
    assert isinstance(manager, S3PickleIOManager)
    assert (manager.s3_bucket, manager.s3_prefix) == ("acme-ingest-state", "prod/dagster-io")
    # the broker is an env reference in the executor's config, not the URL
    assert defs.resolve_job_def(f"{dname}__changes_job").executor_def.config_schema._config_fn(None)["broker"] == {"env": "CELERY_BROKER"}
