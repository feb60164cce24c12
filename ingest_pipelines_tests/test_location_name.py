"""One code location name everywhere: workspace.yaml, [tool.dagster], [tool.dg], the demo's workspace, and
the commands the docs give (a run submitted under one name must be launchable by a process using another)."""

from __future__ import annotations

import re
import tomllib

import yaml

from ingest_pipelines import demo
from ingest_pipelines_tests.conftest import REPO_ROOT

NAME = "ingest_pipelines"


def test_workspace_pyproject_dg_and_demo_name_the_location_alike() -> None:
    (entry,) = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"]
    assert entry["python_module"] == {"module_name": "ingest_pipelines.definitions", "location_name": NAME}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]
    assert project["dagster"]["code_location_name"] == NAME
    assert project["dg"]["project"]["code_location_name"] == NAME
    assert (demo.MODULE, demo.LOCATION_NAME) == ("ingest_pipelines.definitions", NAME)


def test_documented_commands_do_not_load_the_module_under_its_own_name() -> None:
    # `dagster dev -m ingest_pipelines.definitions` (and the daemon/webserver alike) would name the location
    # `ingest_pipelines.definitions`: runs it submits could not be launched by a daemon on workspace.yaml
    pattern = re.compile(r"(dagster dev|dagster-daemon run|dagster-webserver)[^`\n]*\s-m\s+ingest_pipelines")
    for page in [REPO_ROOT / "README.md", *(REPO_ROOT / "docs").glob("*.md")]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            assert not pattern.search(line), f"{page.name}:{number}: {line.strip()}"
