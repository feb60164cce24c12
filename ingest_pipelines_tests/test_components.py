"""IngestWorkflowsComponent in dg projects: a fresh `create-dagster project` with this package's wheel (and no moto)
scaffolds it and `dg` lists our definitions; components split one ingest.yaml; this checkout is a dg project too."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from ingest_pipelines.components import IngestWorkflowsComponent
from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.conftest import REPO_ROOT, subprocess_env
from ingest_pipelines_tests.install_fixtures import PlainEnv, session_install

COMPONENT = "ingest_pipelines.components.IngestWorkflowsComponent"
SAMPLE = REPO_ROOT / "ingest_pipelines_tests" / "data" / "sample_ingest.yaml"
STARTER = "inbox_to_outbox"


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> PlainEnv:
    return session_install(tmp_path_factory)[1]


def dg_cli(env: PlainEnv, args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The real `dg` of the plain environment (its console script is the same `dagster_dg_cli.cli:main`)."""
    result = env.run(["-m", "dagster_dg_cli.cli", *args], cwd=cwd, timeout=timeout, PYTHONPATH=str(cwd / "src"))
    assert result.returncode == 0, f"dg {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def new_project(env: PlainEnv, parent: Path, name: str = "lab") -> Path:
    """`create-dagster project` (no uv), then `dg scaffold defs` of our component in folder `ingest`.

    dg runs with PYTHONPATH=<project>/src: what `uv sync` / `pip install -e .` of the project would give."""
    created = env.run(["-c", "from create_dagster.cli import main; main()", "project", "--no-uv-sync", name], cwd=parent)
    assert created.returncode == 0, created.stdout + created.stderr
    project = parent / name
    dg_cli(env, ["scaffold", "defs", COMPONENT, "ingest"], cwd=project)
    return project


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, set[str]]:
    document = json.loads(result.stdout)
    return {
        "assets": {asset["asset_key"] for asset in document["assets"]},
        "asset_checks": {check["key"] for check in document["asset_checks"]},
        "sensors": {sensor["name"] for sensor in document["sensors"]},
        "jobs": {job["name"] for job in document["jobs"]},
        "resources": {resource["name"] for resource in document["resources"]},
    }


def test_the_plain_environment_has_no_moto(plain_env: PlainEnv, tmp_path: Path) -> None:
    """The premise of the tests below: they run where `pip install ingest_pipelines` left no moto."""
    result = plain_env.run(
        ["-c", "import importlib.util as u; print(u.find_spec('moto'), u.find_spec('ingest_pipelines').origin)"], cwd=tmp_path
    )
    found_moto, origin = result.stdout.split()
    assert found_moto == "None"
    assert str(plain_env.root) in origin, "ingest_pipelines must come from the installed wheel, not this checkout"


def test_dg_lists_the_component_from_the_installed_package(plain_env: PlainEnv, tmp_path: Path) -> None:
    result = dg_cli(plain_env, ["list", "components", "--json"], cwd=tmp_path)
    entries = {entry["key"]: entry for entry in json.loads(result.stdout)["items"]}
    assert COMPONENT in entries
    assert "ingest.yaml" in entries[COMPONENT]["summary"]


def test_a_fresh_project_scaffolds_the_component_and_dg_lists_its_assets_sensors_and_checks(plain_env: PlainEnv, tmp_path: Path) -> None:
    project = new_project(plain_env, tmp_path)
    folder = project / "src" / "lab" / "defs" / "ingest"
    assert yaml.safe_load((folder / "defs.yaml").read_text()) == {"type": COMPONENT, "attributes": {"path": "ingest.yaml"}}
    starter = yaml.safe_load((folder / "ingest.yaml").read_text())
    assert "changesStart" not in starter["workflows"][0]  # the changes partitions are the hours that had changes
    assert {store["type"] for store in starter["sources"] + starter["destinations"]} == {"filesystem"}
    assert (folder / ".gitignore").read_text().split() == ["outbox/", ".ingest-state/"]

    checked = dg_cli(plain_env, ["check", "defs"], cwd=project)
    assert "All definitions loaded successfully." in checked.stdout

    defs = listed(dg_cli(plain_env, ["list", "defs", "--json"], cwd=project))
    assert defs["assets"] == {f"{STARTER}/snapshot", f"{STARTER}/changes"}
    assert defs["asset_checks"] == {
        f"{STARTER}/{asset}:{check}"
        for asset in ("snapshot", "changes")
        for check in ("destination_matches_batch", "no_duplicate_records", "batches_applied")
    }
    assert defs["sensors"] == {f"{STARTER}__sync_sensor"}
    assert defs["jobs"] == {f"{STARTER}__apply_job", f"{STARTER}__snapshot_job", f"{STARTER}__changes_job"}
    assert defs["resources"] == {"source_inbox", "destination_outbox", "ingest_state"}


def test_the_starter_workflow_copies_the_inbox_to_the_outbox(plain_env: PlainEnv, tmp_path: Path) -> None:
    project = new_project(plain_env, tmp_path)
    folder = project / "src" / "lab" / "defs" / "ingest"
    (folder / "inbox" / "notes" / "b.txt").parent.mkdir()
    (folder / "inbox" / "notes" / "b.txt").write_text("second file\n")
    in_process = json.dumps({"execution": {"config": {"in_process": {}}}})
    dg_cli(plain_env, ["launch", "--assets", f"{STARTER}/snapshot", "--partition", "all", "--config-json", in_process], cwd=project)
    copied = sorted(path.relative_to(folder / "outbox").as_posix() for path in (folder / "outbox").rglob("*") if path.is_file())
    assert copied == ["hello.txt", "notes/b.txt"]
    assert (folder / "outbox" / "notes" / "b.txt").read_text() == "second file\n"


def write_component(folder: Path, attributes: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(yaml.safe_dump({"type": COMPONENT, "attributes": attributes}))


def test_components_splitting_one_ingest_yaml_load_together() -> None:
    with create_defs_folder_sandbox() as sandbox:
        (sandbox.defs_folder_path / "ingest.yaml").write_text(SAMPLE.read_text())
        write_component(sandbox.defs_folder_path / "mirror", {"path": "../ingest.yaml", "workflows": ["images-mirror"]})
        write_component(sandbox.defs_folder_path / "archive", {"path": "../ingest.yaml", "workflows": ["faces", "pacifica", "umap"]})
        with sandbox.build_all_defs() as defs:
            repo = defs.get_repository_def()
            assets = {key.to_user_string() for key in repo.asset_graph.get_all_asset_keys()}
            assert assets == {"images_mirror/snapshot", "images_mirror/changes", "faces/indexed", "pacifica/bundle", "umap/import"}
            assert "ingest_state" in defs.resources
        with sandbox.build_component_tree() as tree:
            assert tree.build_defs(sandbox.defs_folder_path / "mirror").resolve_asset_graph().get_all_asset_keys() == {
                dg.AssetKey(["images_mirror", "snapshot"]),
                dg.AssetKey(["images_mirror", "changes"]),
            }


def test_without_workflows_the_component_builds_what_dagster_dev_builds() -> None:
    expected = build_definitions(load_config(SAMPLE)).get_repository_def()
    with create_defs_folder_sandbox() as sandbox:
        write_component(sandbox.defs_folder_path / "all", {"path": str(SAMPLE)})
        with sandbox.load_component_and_build_defs(sandbox.defs_folder_path / "all") as (component, defs):
            assert isinstance(component, IngestWorkflowsComponent)
            repo = defs.get_repository_def()
    assert repo.asset_graph.get_all_asset_keys() == expected.asset_graph.get_all_asset_keys()
    assert repo.asset_graph.asset_check_keys == expected.asset_graph.asset_check_keys
    assert {s.name for s in repo.sensor_defs} == {s.name for s in expected.sensor_defs}
    assert {j.name for j in repo.get_all_jobs()} == {j.name for j in expected.get_all_jobs()}
    assert set(repo.get_top_level_resources()) == set(expected.get_top_level_resources())


def test_secrets_reach_dagster_as_env_vars() -> None:
    with create_defs_folder_sandbox() as sandbox:
        write_component(sandbox.defs_folder_path / "mirror", {"path": str(SAMPLE), "workflows": ["images-mirror"]})
        with sandbox.build_all_defs() as defs:
            source = defs.resources["source_images"]
    assert isinstance(source.aws_access_key_id, dg.EnvVar) and source.aws_access_key_id.env_var_name == "SAMPLE_KEY"
    assert isinstance(source.aws_secret_access_key, dg.EnvVar) and source.aws_secret_access_key.env_var_name == "SAMPLE_SECRET"


def config_error(defs_folder: Path) -> ConfigError:
    """The ConfigError behind the component tree's own error (which names the defs.yaml)."""
    with pytest.raises(Exception) as raised:
        with create_defs_folder_sandbox() as sandbox:
            shutil.copytree(defs_folder, sandbox.defs_folder_path, dirs_exist_ok=True)
            with sandbox.build_all_defs():
                pass
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, ConfigError):
        error = error.__cause__
    assert isinstance(error, ConfigError), f"no ConfigError behind {raised.value!r}"
    return error


def test_a_workflow_the_file_does_not_have_is_an_error_naming_it(tmp_path: Path) -> None:
    write_component(tmp_path / "typo", {"path": str(SAMPLE), "workflows": ["images-mirror", "imgaes"]})
    assert str(config_error(tmp_path)) == (
        f"{SAMPLE}: no workflow named 'imgaes' (attribute `workflows`; the file has: faces, images-mirror, pacifica, umap)"
    )


def test_a_missing_ingest_yaml_is_an_error_naming_the_path(tmp_path: Path) -> None:
    write_component(tmp_path / "nofile", {"path": "nope.yaml"})
    assert str(config_error(tmp_path)).endswith("/nofile/nope.yaml: config file not found (attribute `path` of its defs.yaml)")


# --------------------------------------------------------------------------- this checkout as a dg project


def test_this_checkout_is_a_dg_project_with_workspace_yamls_location_name() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    location = workspace["load_from"][0]["python_module"]
    project = pyproject["tool"]["dg"]["project"]
    assert pyproject["tool"]["dg"]["directory_type"] == "project"
    assert project["code_location_name"] == location["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]
    assert project["code_location_target_module"] == location["module_name"] == pyproject["tool"]["dagster"]["module_name"]


def repo_dg(args: list[str], timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dagster_dg_cli.cli", *args],
        cwd=REPO_ROOT,
        env=subprocess_env(INGEST_CONFIG=str(SAMPLE), DAGSTER_DG_UPDATE_CHECK_ENABLED="0", **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"dg {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_dg_check_and_list_defs_load_this_checkouts_code_location() -> None:
    assert "All definitions loaded successfully." in repo_dg(["check", "defs"]).stdout
    defs = listed(repo_dg(["list", "defs", "--json"]))
    assert defs["assets"] == {"images_mirror/snapshot", "images_mirror/changes", "faces/indexed", "pacifica/bundle", "umap/import"}
    assert "faces__inventory_sensor" in defs["sensors"] and "umap/import:import_complete" in defs["asset_checks"]


def graphql(port: int, query: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]


LOCATIONS = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"


def test_dg_dev_serves_the_code_location_under_its_workspace_name(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    port = free_port()
    env = subprocess_env(INGEST_CONFIG=str(SAMPLE), DAGSTER_HOME=str(home), DAGSTER_DG_UPDATE_CHECK_ENABLED="0")
    dev = subprocess.Popen(
        [sys.executable, "-m", "dagster_dg_cli.cli", "dev", "--port", str(port), "--host", "127.0.0.1"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        entries: list[dict[str, Any]] = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and dev.poll() is None:
            try:
                entries = graphql(port, LOCATIONS)["workspaceOrError"]["locationEntries"]
            except OSError:
                entries = []
            if entries and entries[0]["locationOrLoadError"]:
                break
            time.sleep(0.5)  # poll until the webserver has loaded the location (bounded above)
        assert [(entry["name"], entry["locationOrLoadError"]["__typename"]) for entry in entries] == [
            ("ingest_pipelines", "RepositoryLocation")
        ]
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGINT)
        try:
            dev.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.communicate()
