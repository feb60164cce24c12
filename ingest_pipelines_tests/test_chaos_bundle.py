"""Chaos test of the bundle workflow (ingest_pipelines_tests/chaos_bundle.py) with small numbers: the real daemon,
serve and code servers killed with -9 at random moments while bundles are POSTed; every job ends OK with its files,
nothing is lost or archived twice, and nothing incomplete is left in the archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_pipelines_tests.chaos_bundle import run_chaos
from ingest_pipelines_tests.deploy_fixtures import FAST_MONITORING


@pytest.mark.slow
def test_every_bundle_job_ends_ok_with_its_files_after_random_kills(tmp_path: Path, s3_server) -> None:
    result = run_chaos(
        rounds=4, seed=20240601, workdir=tmp_path, endpoint=s3_server.endpoint_url, per_round=2, instance_overrides=FAST_MONITORING
    )
    print(result)
    assert result["bundles"] == 8 and sum(result["kills"].values()) >= 2, result
    assert (result["lost"], result["duplicated"], result["incomplete"]) == (0, 0, []), result
