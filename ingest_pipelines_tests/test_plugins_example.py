"""The example plugin package (examples/ingest-plugin-sqlite), pip-installed into a separate venv, adds
`type: sqlite-table`: `ingest-pipelines plugins` lists it from its own distribution, an ingest.yaml using it
validates (errors name its fields) and a sync workflow from it into a folder, S3 and another sqlite-table runs
through Dagster, then follows an update, a delete and an insert.

The check runs in that venv's interpreter, so the entry point is a real installed one."""

from __future__ import annotations

import importlib.util
import json
import os
import site
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.sync_fixtures import bucket_keys

EXAMPLE = REPO_ROOT / "examples" / "ingest-plugin-sqlite"
DRIVER = Path(__file__).with_name("plugins_example_driver.py")


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv that sees this environment's packages (ingest_pipelines included) and has the example installed."""
    venv = tmp_path_factory.mktemp("plugin-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(target).mkdir(parents=True, exist_ok=True)
    # this environment's site-packages, .pth files included (the editable install of ingest_pipelines is one)
    lines = [f"import site; site.addsitedir({path!r})" for path in site.getsitepackages()]
    (Path(target) / "zz_parent_env.pth").write_text("\n".join(lines) + "\n")
    # offline when this environment can build a wheel itself (wheel installed: the dev extra), else pip fetches setuptools
    offline = ["--no-index", "--no-build-isolation"] if importlib.util.find_spec("wheel") is not None else []
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", *offline, "-q", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=venv.parent,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return python


def run(python: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from this checkout's path
    environment.update(env or {})
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=600, env=environment, cwd=str(python.parent))


def table(path: Path) -> dict[str, tuple[str, bytes]]:
    with sqlite3.connect(path) as db:
        return {row[0]: (row[1], row[2]) for row in db.execute("SELECT id, version, data FROM elements")}


def write_rows(path: Path, rows: dict[str, tuple[str, bytes]], delete: tuple[str, ...] = ()) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS elements (id TEXT PRIMARY KEY, version TEXT, content_type TEXT, data BLOB)")
        for key, (version, data) in rows.items():
            db.execute("INSERT OR REPLACE INTO elements VALUES (?, ?, 'text/plain', ?)", (key, version, data))
        for key in delete:
            db.execute("DELETE FROM elements WHERE id = ?", (key,))


def test_the_example_plugin_is_listed_from_its_own_distribution(plugin_venv) -> None:
    result = run(plugin_venv, "-m", "ingest_pipelines.cli", "plugins")
    assert result.returncode == 0, result.stderr
    assert (
        "sqlite-table  [source, destination]  entry point sqlite-table = ingest_plugin_sqlite:plugin from ingest-plugin-sqlite 0.1.0"
        in result.stdout
    )
    block = result.stdout.split("sqlite-table  [")[1].split("\n\n")[0]
    assert "path" in block and "pageSize" in block and "deletes" in block
    imported = run(
        plugin_venv, "-c", "import ingest_pipelines, ingest_plugin_sqlite; print(ingest_pipelines.__file__, ingest_plugin_sqlite.__file__)"
    )
    assert str(REPO_ROOT) in imported.stdout and str(plugin_venv.parent.parent) in imported.stdout  # one from here, one installed there


def test_the_example_plugin_validates_and_syncs_through_dagster(plugin_venv, tmp_path, s3, s3_server) -> None:
    s3.create_bucket(Bucket="mirror")
    source_db, copy_db = tmp_path / "notes.sqlite", tmp_path / "copy.sqlite"
    write_rows(source_db, {f"note-{i}": ("1", f"note {i}".encode()) for i in range(5)} | {"../up": ("1", b"dots")})
    document: dict[str, Any] = {
        "sources": [{"name": "notes", "type": "sqlite-table", "path": str(source_db), "pageSize": 2}],
        "destinations": [
            {"name": "folder", "type": "filesystem", "path": str(tmp_path / "folder"), "deletes": True},
            {
                "name": "mirror",
                "type": "s3",
                "bucket": "mirror",
                "endpoint": s3_server.endpoint_url,
                "region": "us-east-1",
                "deletes": True,
            },
            {"name": "copy", "type": "sqlite-table", "path": str(copy_db), "deletes": True},
        ],
        "workflows": [
            {
                "name": "notes-sync",
                "source": "notes",
                "destinations": ["folder", "mirror", "copy"],
                "settleDelay": "0s",
                "interval": "1ms",
                "batchSize": 4,
            }
        ],
        "state": {"type": "filesystem", "path": str(tmp_path / "state")},
    }
    config = tmp_path / "ingest.yaml"
    env = {"DAGSTER_HOME": str(tmp_path / "dagster_home")}
    Path(env["DAGSTER_HOME"]).mkdir()

    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({**document, "sources": [{"name": "notes", "type": "sqlite-table", "path": "x", "pageSize": 0}]}))
    answer = json.loads(run(plugin_venv, str(DRIVER), str(broken), "notes-sync", env=env).stdout)
    assert answer["config_error"].startswith(f"{broken}: sources[0] (notes): field 'pageSize': Input should be greater than or equal to 1")

    def sync() -> dict[str, Any]:
        config.write_text(yaml.safe_dump(document))
        result = run(plugin_venv, str(DRIVER), str(config), "notes-sync", env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    def assert_in_sync() -> None:
        expected = {key.replace("../", "..%2F"): data for key, (_, data) in table(source_db).items()}
        folder = tmp_path / "folder"
        assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == expected
        assert {k: s3.get_object(Bucket="mirror", Key=k)["Body"].read() for k in bucket_keys(s3, "mirror")} == expected
        assert {k: data for k, (_, data) in table(copy_db).items()} == expected

    first = sync()
    assert first["runs"] >= 1 and first["failed"] == 0 and first["checks_failed"] == 0
    assert first["source_type"] == "ingest_plugin_sqlite"
    assert_in_sync()

    write_rows(source_db, {"note-1": ("2", b"note 1, edited"), "note-9": ("1", b"new note")}, delete=("note-3",))
    second = sync()
    assert second["runs"] >= 1 and second["failed"] == 0 and second["checks_failed"] == 0
    assert_in_sync()
    assert table(copy_db)["note-1"][0] == "2"
