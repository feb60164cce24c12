"""deploy/: the production instance on the machine's PostgreSQL (`dagster instance info`, pools), the
commented ECS launcher block, the Helm values, the ECS task definition and the Dockerfile."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import DEPLOY_INSTANCE, child_env, fresh_database, instance_home, pg_query

DEPLOY = REPO_ROOT / "deploy"


def dagster_cli(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagster", *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_instance_info_shows_postgres_storage_and_pools_are_set(tmp_path: Path) -> None:
    with fresh_database() as pg_env:
        home = instance_home(tmp_path / "dagster_home")
        env = child_env(DAGSTER_HOME=str(home), **pg_env)
        info = dagster_cli(["instance", "info"], env)
        assert info.returncode == 0, info.stderr[-3000:]
        out = info.stdout
        for storage in (
            "run_storage: PostgresRunStorage",
            "event_log_storage: PostgresEventLogStorage",
            "schedule_storage: PostgresScheduleStorage",
        ):
            assert storage in out, out
        # the instance really is that database: Dagster created its tables there
        tables = {row[0] for row in pg_query(pg_env, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"runs", "event_logs", "jobs", "job_ticks", "concurrency_limits"} <= tables, tables
        assert "max_concurrent_runs: 20" in out and "key: ingest/serial" in out and "applyLimitPerUniqueValue: true" in out

        pools = subprocess.run(["sh", str(DEPLOY / "set-pools.sh")], env=env, capture_output=True, text=True, timeout=180)
        assert pools.returncode == 0, pools.stderr[-3000:]
        got = dagster_cli(["instance", "concurrency", "get", "--all"], env)
        assert got.returncode == 0, got.stderr[-3000:]
        for line in ('"gateway": 0 / 4 slots occupied', '"pennsieve": 0 / 2 slots occupied', '"policy": 0 / 2 slots occupied'):
            assert line in got.stdout, got.stdout
        limits = dict(pg_query(pg_env, 'SELECT concurrency_key, "limit" FROM concurrency_limits'))
        assert limits == {"gateway": 4, "pennsieve": 2, "policy": 2}


def test_instance_yaml_reads_every_database_setting_from_the_environment() -> None:
    document = yaml.safe_load(DEPLOY_INSTANCE.read_text())
    db = document["storage"]["postgres"]["postgres_db"]
    assert db["scheme"] == "postgresql+psycopg2"
    assert {key: value for key, value in db.items() if isinstance(value, dict) and "env" in value} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USERNAME"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    assert document["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert document["concurrency"]["pools"]["default_limit"] >= 1
    assert document["retention"]["sensor"]["purge_after_days"]["skipped"] > 0


def _commented_block(text: str, name: str) -> dict:
    match = re.search(rf"# BEGIN {name}\n(.*?)# END {name}", text, re.S)
    assert match, f"no `# BEGIN {name}` block in deploy/dagster.yaml"
    lines = [line.removeprefix("# ") if line.startswith("# ") else line.removeprefix("#") for line in match.group(1).splitlines()]
    return yaml.safe_load("\n".join(lines))


def test_commented_ecs_run_launcher_matches_dagster_aws_schema() -> None:
    from dagster._config import process_config
    from dagster_aws.ecs import EcsRunLauncher

    block = _commented_block(DEPLOY_INSTANCE.read_text(), "ecs-run-launcher")["run_launcher"]
    assert (block["module"], block["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    result = process_config(EcsRunLauncher.config_type(), block["config"])
    assert result.success, [error.message for error in result.errors or []]
    k8s = re.search(r"#   class: K8sRunLauncher\n((?:#.*\n)+)", DEPLOY_INSTANCE.read_text())
    assert k8s and "instance_config_map" in k8s.group(1) and "env_secrets" in k8s.group(1)


def test_helm_values_name_image_code_server_env_and_secrets() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["image"]["repository"] and deployment["image"]["tag"]
    assert deployment["codeServerArgs"] == ["-m", "ingest_pipelines.definitions"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["INGEST_CONFIG"].startswith(deployment["volumeMounts"][0]["mountPath"])
    assert "DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS" in env
    assert deployment["envSecrets"] == [{"name": "ingest-pipelines-secrets"}]
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    limits = values["concurrency"]["runs"]["tagConcurrencyLimits"]
    assert {"key": "ingest/serial", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert values["runLauncher"]["type"] == "K8sRunLauncher"


def test_ecs_task_definition_names_image_secrets_and_env() -> None:
    task = json.loads((DEPLOY / "ecs" / "task-definition.json").read_text())
    container = task["containerDefinitions"][0]
    assert container["image"] and container["command"][:3] == ["dagster", "code-server", "start"]
    env = {item["name"] for item in container["environment"]}
    assert {"INGEST_CONFIG", "DAGSTER_HOME", "DAGSTER_CURRENT_IMAGE", "DAGSTER_PG_HOST", "DAGSTER_PG_DB"} <= env
    secrets = {item["name"]: item["valueFrom"] for item in container["secrets"]}
    assert "DAGSTER_PG_PASSWORD" in secrets and "DAGSTER_PG_PASSWORD" not in env
    assert all(arn.startswith(("arn:aws:secretsmanager:", "arn:aws:ssm:")) for arn in secrets.values())


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [tuple(line.strip().split(None, 1)) for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]  # type: ignore[misc]


def dockerfile_command() -> list[str]:
    """The image's CMD (JSON form), used as-is by the multi-process test to start the code server."""
    cmd = [args for op, args in dockerfile_instructions() if op == "CMD"]
    assert len(cmd) == 1
    return json.loads(cmd[0])


def test_dockerfile_is_minimal_and_its_copies_build_a_wheel_with_the_code(tmp_path: Path) -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert dockerfile_command() == ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "ingest_pipelines.definitions"]
    env = " ".join(args for op, args in instructions if op == "ENV")
    assert "INGEST_CONFIG=" in env and "DAGSTER_HOME=" in env
    copies = [shlex.split(args) for op, args in instructions if op == "COPY"]
    for *sources, _target in copies:
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repository"
    assert any("pip install ." in args for op, args in instructions if op == "RUN")
    # what `pip install .` does in the image, from only the files the image copies
    context = tmp_path / "context"
    for *sources, _target in copies:
        for source in sources:
            if source.startswith("deploy/"):
                continue
            src = REPO_ROOT / source
            if src.is_dir():
                shutil.copytree(src, context / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                (context / source).parent.mkdir(parents=True, exist_ok=True)
                (context / source).write_bytes(src.read_bytes())
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "wheel").glob("ingest_pipelines-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ingest_pipelines/definitions.py" in names
    assert not any(name.startswith("ingest_pipelines_tests/") for name in names)
