"""A wheel of this checkout and a Python environment it is installed in, without moto: what a user's plain
`pip install ingest_pipelines` gives, built from the packages already here (no download beyond pip's build step).

The environment is a fresh venv whose site-packages sees this venv's packages through a folder of links that
leaves out moto and this checkout's own editable install; the wheel goes in with `pip --python ... --no-deps`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from ingest_pipelines_tests.conftest import REPO_ROOT

#: what a plain install does not have: moto (the `demo` extra), and this checkout itself (the wheel replaces it)
LEFT_OUT = ("moto", "ingest_pipelines", "__editable__")


@dataclass(frozen=True)
class PlainEnv:
    root: Path
    python: Path
    #: DAGSTER_HOME of the processes: an instance on disk with telemetry off
    dagster_home: Path

    @property
    def bin(self) -> Path:
        return self.python.parent

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a process of this venv: nothing from this checkout on PYTHONPATH, no AWS account."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "PYTHON", "VIRTUAL_ENV", "INGEST_"))}
        env.update(
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
            AWS_EC2_METADATA_DISABLED="true",
            VIRTUAL_ENV=str(self.root),
            DAGSTER_HOME=str(self.dagster_home),
            PATH=os.pathsep.join([str(self.bin), env.get("PATH", "")]),
            # create-dagster and dg ask PyPI whether they are outdated; the tests have no use for it
            DAGSTER_DG_UPDATE_CHECK_ENABLED="0",
            **extra,
        )
        return env

    def run(self, args: list[str], cwd: Path, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=cwd, env=self.env(**extra), capture_output=True, text=True, timeout=timeout)


def build_wheel(out: Path) -> Path:
    """`pip wheel` of the files a checkout ships (as the Dockerfile copies them), outside the work tree."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "ingest_pipelines", source / "ingest_pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out / "dist"), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return next((out / "dist").glob("ingest_pipelines-*.whl"))


def make_plain_env(root: Path, wheel: Path) -> PlainEnv:
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root / "venv")
    python = root / "venv" / "bin" / "python"
    links = root / "site-packages"
    links.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if not entry.name.startswith(LEFT_OUT) and entry.name != "__pycache__":
            (links / entry.name).symlink_to(entry)
    target_site = subprocess.check_output([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True)
    Path(target_site.strip(), "present-packages.pth").write_text(f"{links}\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return PlainEnv(root=root / "venv", python=python, dagster_home=home)


_BUILT: dict[Path, tuple[Path, PlainEnv]] = {}


def session_install(factory: pytest.TempPathFactory) -> tuple[Path, PlainEnv]:
    """The wheel and the plain environment, built once per test session (the modules' fixtures share them)."""
    key = factory.getbasetemp()
    if key not in _BUILT:
        wheel = build_wheel(factory.mktemp("wheel"))
        _BUILT[key] = (wheel, make_plain_env(factory.mktemp("plain-env"), wheel))
    return _BUILT[key]
