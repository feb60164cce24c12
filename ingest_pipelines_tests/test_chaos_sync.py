"""Chaos through the documented processes: a sync workflow (versioned source; an `s3` mirror with deletes, a
`s3-records` JSON destination with bufferSize 5, a folder) under the real dagster-daemon while kill -9 hits the
daemon, its process group, its code server and run workers at random; in listing mode and in events mode.
Afterwards the destinations equal the source, every current version has exactly one record and every deleted
key ends with its delete record. (`make chaos` runs the same for longer; see ingest_pipelines_tests/chaos.py.)
"""

from __future__ import annotations

import pytest

from ingest_pipelines_tests.chaos_sync import ChaosSettings, SyncChaos
from ingest_pipelines_tests.deploy_fixtures import FAST_MONITORING


@pytest.mark.slow
@pytest.mark.parametrize("mode,seed", [("list", 11), ("events", 23)])
def test_sync_converges_after_random_kills(mode, seed, tmp_path, s3_server) -> None:
    settings = ChaosSettings(
        rounds=6,
        seed=seed,
        mode=mode,
        pause=(0.5, 2.0),
        kill_chance=1.0,
        # every kind of victim at least once (each waited for while absent: a run worker needs a run in progress)
        schedule=("run-worker", "daemon", "code-server", "daemon-group", "run-worker"),
        converge_timeout=150,
        instance_overrides=FAST_MONITORING,
    )
    chaos = SyncChaos(tmp_path, s3_server.endpoint_url, s3_server.client("s3"), s3_server.client("sqs"), settings)
    report = chaos.run()
    summary = report.summary()
    print(f"chaos {mode}: {summary}")
    assert set(report.kills) == {"run-worker", "daemon", "code-server", "daemon-group"}, summary
    assert report.converged, f"{summary}\n{chaos.procs.logs(3000)}"
    assert (report.lost, report.stale, report.missing_records, report.duplicated_records, report.missing_delete_records) == (
        0,
        0,
        0,
        0,
        0,
    ), summary
