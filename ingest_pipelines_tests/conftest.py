"""Shared fixtures: a moto S3 server process per session (reset between tests), HTTP test servers,
a Dagster test instance, and a helper that writes an ingest.yaml."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from ingest_pipelines.testing import MotoServer, TestHTTPServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _aws_test_env() -> Iterator[None]:
    """Tests never reach AWS: fake credentials, no CA bundle, no shared config files."""
    saved = {
        k: os.environ.get(k) for k in [*TEST_CREDENTIALS, "AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"]
    }
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)
    os.environ.pop("AWS_PROFILE", None)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer(log_path=log) as server:
        yield server


@pytest.fixture
def s3_server(moto_server: MotoServer) -> Iterator[MotoServer]:
    """The session's moto server, emptied before each test that uses it."""
    moto_server.reset()
    yield moto_server


@pytest.fixture
def s3(s3_server: MotoServer) -> Any:
    """A boto3 S3 client on the test server."""
    return s3_server.client("s3")


@pytest.fixture
def http_server() -> Iterator[Callable[..., TestHTTPServer]]:
    """Factory: `http_server(handler)` starts a recording HTTP server, stopped after the test."""
    servers: list[TestHTTPServer] = []

    def start(handler: Any) -> TestHTTPServer:
        server = TestHTTPServer(handler).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Write a dict as ingest.yaml in the test's folder and return its path."""

    def write(document: dict[str, Any], name: str = "ingest.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must import this checkout's code."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env
