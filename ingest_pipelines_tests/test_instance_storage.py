"""The project's dagster.yaml (IngestInstance): processes started together on a new DAGSTER_HOME all open its
SQLite storage, which is where Dagster's own default keeps it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ingest_pipelines_tests.conftest import REPO_ROOT, subprocess_env

#: opens the instance as every Dagster process does (DAGSTER_HOME), once `go` exists: all start at once
OPEN_INSTANCE = """
import os, sys, time
from pathlib import Path
go = Path(sys.argv[1])
while not go.exists():
    time.sleep(0.005)
import dagster as dg
with dg.DagsterInstance.get() as instance:
    instance.get_runs(limit=1)
    print(type(instance.run_storage).__name__)
"""

OPENERS = 6


def open_together(home: Path, go: Path) -> list[subprocess.CompletedProcess[str]]:
    env = subprocess_env(DAGSTER_HOME=str(home))
    processes = [
        subprocess.Popen([sys.executable, "-c", OPEN_INSTANCE, str(go)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(OPENERS)
    ]
    time.sleep(3)  # every process has imported dagster and waits for `go`
    go.touch()
    done = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def schema_versions(home: Path) -> dict[str, int]:
    """Rows of alembic_version in each SQLite database of the storage (one: a single schema head)."""
    found = {}
    for db in sorted(home.rglob("*.db")):
        with sqlite3.connect(db) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
            if "alembic_version" in tables:
                found[str(db.relative_to(home))] = connection.execute("select count(*) from alembic_version").fetchone()[0]
    return found


@pytest.mark.parametrize("round_", range(2))
def test_processes_started_together_on_a_new_home_all_open_the_storage(tmp_path: Path, round_: int) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    done = open_together(home, tmp_path / "go")
    failed = [result.stderr[-1500:] for result in done if result.returncode != 0]
    assert not failed, failed[0]
    assert {result.stdout.strip() for result in done} == {"SqliteRunStorage"}
    versions = schema_versions(home)
    assert {"history/runs.db", "history/runs/index.db", "schedules/schedules.db"} <= set(versions), versions
    assert set(versions.values()) == {1}, versions
    # and the storage is where Dagster's default SQLite storage puts it: a plain instance opens the same databases
    document = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert document.pop("instance_class")["class"] == "IngestInstance"
    (home / "dagster.yaml").write_text(yaml.safe_dump(document))
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import dagster as dg\nwith dg.DagsterInstance.get() as i: print(len(i.get_runs()), i.get_ref().storage_data.class_name)",
        ],
        env=subprocess_env(DAGSTER_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.split() == ["0", "DagsterSqliteStorage"], check.stderr[-1500:]
    assert schema_versions(home) == versions  # nothing new created: the same databases


def test_a_relative_storage_folder_is_refused_by_name(tmp_path: Path) -> None:
    from dagster._serdes import ConfigurableClassData

    from ingest_pipelines.defs.instance_storage import LockedSqliteStorage

    with pytest.raises(ValueError, match="base_dir must be an absolute path, got 'relative/home'"):
        LockedSqliteStorage.from_config_value(ConfigurableClassData("m", "c", "{}"), {"base_dir": "relative/home"})
