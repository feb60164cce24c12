"""Fixtures for the pennsieve tests: the API test server with its upload bucket and the target's environment.

Test modules load them with `pytest_plugins = ["ingest_pipelines_tests.pennsieve_fixtures"]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest_pipelines.testing.moto_server import MotoServer
from ingest_pipelines.testing.pennsieve import PennsieveTestServer
from ingest_pipelines_tests.pennsieve_support import DATASET, PACKAGE, RUN_ID, TOKEN, UPLOAD_BUCKET


@pytest.fixture
def api(s3_server: MotoServer) -> Iterator[PennsieveTestServer]:
    """The Pennsieve API test server (token TOKEN for run RUN_ID) and its upload bucket on the moto server."""
    s3_server.client("s3").create_bucket(Bucket=UPLOAD_BUCKET)
    with PennsieveTestServer(tokens={RUN_ID: TOKEN}, bucket=UPLOAD_BUCKET) as server:
        yield server


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    path = tmp_path / "input"
    path.mkdir()
    return path


@pytest.fixture
def target_env(
    api: PennsieveTestServer, input_dir: Path, tmp_path: Path, s3_server: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The seed's environment for the target, pointing at the test servers (boto3 finds S3 via AWS_ENDPOINT_URL_S3)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    return {
        "INPUT_DIR": str(input_dir),
        "CALLBACK_TOKEN": TOKEN,
        "EXECUTION_RUN_ID": RUN_ID,
        "DATASET_ID": DATASET,
        "PACKAGE_ID": PACKAGE,
        "PENNSIEVE_API_HOST2": api.url,
        "PENNSIEVE_STATE_DIR": str(tmp_path / "state"),
    }
