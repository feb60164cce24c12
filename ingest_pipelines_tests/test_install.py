"""The install footprint: a plain `pip install ingest_pipelines` brings no moto (the `demo`/`dev` extras do), the code
location loads without it, `ingest-pipelines demo` says how to get it, and the production image installs no extra."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.install_fixtures import PlainEnv, session_install

SAMPLE = REPO_ROOT / "ingest_pipelines_tests" / "data" / "sample_ingest.yaml"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_install(tmp_path_factory)[0]


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> PlainEnv:
    return session_install(tmp_path_factory)[1]


def wheel_requirements(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(archive.read(metadata).decode())
    return [Requirement(line) for line in message.get_all("Requires-Dist") or []]


def names_for(requirements: list[Requirement], extra: str) -> set[str]:
    """Names required with `extra` ("" = no extra), markers evaluated for this interpreter."""
    return {canonicalize_name(r.name) for r in requirements if r.marker is None or r.marker.evaluate({"extra": extra})}


def test_the_wheel_requires_moto_only_with_the_demo_or_dev_extra(wheel: Path) -> None:
    requirements = wheel_requirements(wheel)
    assert "moto" not in names_for(requirements, "")
    assert "moto" in names_for(requirements, "demo")
    dev = [r for r in requirements if r.marker is not None and r.marker.evaluate({"extra": "dev"}) and r.name == "ingest_pipelines"]
    assert [sorted(r.extras) for r in dev] == [["demo"]], "the dev extra must bring the demo extra (the tests use moto)"
    assert {"dagster-dg-cli", "create-dagster"} <= names_for(requirements, "dev")


def test_moto_is_not_in_the_plain_installs_dependency_closure(wheel: Path) -> None:
    """What `pip install ingest_pipelines` resolves to, walked through the installed packages' own metadata."""
    seen: set[str] = set()
    pending = [r for r in wheel_requirements(wheel) if r.marker is None or r.marker.evaluate({"extra": ""})]
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform or Python (its marker is false here)
        for line in requires:
            child = Requirement(line)
            if child.marker is None or any(child.marker.evaluate({"extra": extra}) for extra in extras | {""}):
                pending.append(child)
    reached = {key.split("[")[0] for key in seen}
    assert "dagster" in reached and "boto3" in reached  # the walk went somewhere
    assert "moto" not in reached


def test_the_code_location_loads_without_moto(plain_env: PlainEnv, tmp_path: Path) -> None:
    result = plain_env.run(
        ["-m", "dagster", "definitions", "validate", "-m", "ingest_pipelines.definitions"], cwd=tmp_path, INGEST_CONFIG=str(SAMPLE)
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Validation successful" in result.stdout + result.stderr


def test_the_demo_without_moto_says_how_to_get_it_and_touches_nothing(plain_env: PlainEnv, tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [str(plain_env.bin / "ingest-pipelines"), "demo", "--dir", str(workdir), "--fresh"],
        cwd=tmp_path,
        env=plain_env.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "pip install 'ingest_pipelines[demo]'" in result.stderr
    assert "make demo" in result.stderr
    assert not workdir.exists()


def test_the_production_image_installs_no_extra() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [line for line in text.splitlines() if not line.lstrip().startswith("#") and "pip install" in line]
    assert installs, "the Dockerfile installs the package with pip"
    assert all(not re.search(r"pip install [^&]*\[", line) for line in installs), installs


def test_make_demo_installs_the_dev_extra_which_brings_the_demo_extra(wheel: Path) -> None:
    plan = subprocess.run(["make", "-n", "-B", "demo", "VENV=/nonexistent-venv"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert plan.returncode == 0, plan.stderr
    assert "pip install -q -e '.[dev]'" in plan.stdout
    assert "moto" in names_for(wheel_requirements(wheel), "demo")
