"""The code location: `defs` builds from a config, validates with the real `dagster` CLI, and keeps
secrets out of resource config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, ObjectStoreResource
from ingest_pipelines_tests.conftest import subprocess_env

SOURCE = {
    "name": "src",
    "type": "s3",
    "endpoint": "http://127.0.0.1:9",
    "bucket": "b",
    "accessKeyID": "$TEST_SRC_KEY",
    "secretAccessKey": "${TEST_SRC_SECRET}",
}


def validate(config_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "ingest_pipelines.definitions"],
        cwd=cwd,
        env=subprocess_env(INGEST_CONFIG=str(config_path)),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_empty_config_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("")
    result = validate(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr


def test_broken_config_fails_validation_naming_the_field(tmp_path: Path, write_config) -> None:
    path = write_config({"sources": [SOURCE], "workflows": [{"name": "w", "source": "nope", "destinations": []}]})
    result = validate(path, tmp_path)
    assert result.returncode != 0
    assert "workflow 'w': field 'source': no source named 'nope'" in result.stdout + result.stderr


def test_resources_take_secrets_as_env_vars_only(monkeypatch, write_config) -> None:
    monkeypatch.setenv("TEST_SRC_KEY", "AKIA-SHOULD-NOT-LEAK")
    monkeypatch.setenv("TEST_SRC_SECRET", "secret-should-not-leak")
    config = load_config(write_config({"sources": [SOURCE]}))
    defs = build_definitions(config)
    resource = defs.resources["source_src"]
    assert isinstance(resource, ObjectStoreResource)
    assert isinstance(resource.aws_access_key_id, dg.EnvVar) and resource.aws_access_key_id.env_var_name == "TEST_SRC_KEY"
    assert isinstance(resource.aws_secret_access_key, dg.EnvVar)
    assert "should-not-leak" not in repr(resource)
    assert STATE_RESOURCE_KEY in defs.resources


SAMPLE = Path(__file__).resolve().parent / "data" / "sample_ingest.yaml"


def test_sample_config_builds_every_kinds_graph() -> None:
    repo = build_definitions(load_config(SAMPLE)).get_repository_def()
    assets = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
    assert assets == {"images_mirror/snapshot", "images_mirror/changes", "faces/indexed", "pacifica/bundle", "umap/import"}
    checks = {f"{c.asset_key.to_user_string()}:{c.name}" for c in repo.asset_graph.asset_check_keys}
    assert checks == {
        "images_mirror/snapshot:destination_matches_batch",
        "images_mirror/snapshot:no_duplicate_records",
        "images_mirror/changes:destination_matches_batch",
        "images_mirror/changes:no_duplicate_records",
        "images_mirror/snapshot:batches_applied",
        "images_mirror/changes:batches_applied",
        "faces/indexed:no_failures",
        "pacifica/bundle:archive_matches_metadata",
        "umap/import:import_complete",
    }
    sensors = {s.name: s for s in repo.sensor_defs}
    assert set(sensors) == {
        "images_mirror__sync_sensor",
        "faces__inventory_sensor",
        "pacifica__drop_sensor",
        "umap__folders_sensor",
    }
    assert sensors["images_mirror__sync_sensor"].minimum_interval_seconds == 14  # interval 60s: passes; ticks every 15 s (defs/ticks.py)
    assert sensors["images_mirror__sync_sensor"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors["umap__folders_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    jobs = {job.name for job in repo.get_all_jobs()} - {"__ASSET_JOB"}
    assert jobs == {
        "images_mirror__apply_job",
        "images_mirror__snapshot_job",
        "images_mirror__changes_job",
        "faces__index_job",
        "pacifica__ingest_job",
        "umap__import_job",
    }


def test_sample_config_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    result = validate(SAMPLE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
