"""Reconciliation decisions (bundles/attempts.py) on a real job store and the moto S3 server, with the orchestrator's
side played by a recorded fake (`FakeRuns`) and a settable clock: first attempts, one launch per attempt across two
reconcilers, retries with backoff after dead runs, maxAttempts, never-started runs, lost claims, launch failures."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from ingest_pipelines.bundles.attempts import (
    CANCELED,
    FAILED,
    QUEUED,
    RUNNING,
    UNSUBMITTED,
    BundleReconciler,
    LaunchFailed,
    RunView,
)
from ingest_pipelines.bundles.ingest import run_job
from ingest_pipelines.bundles.jobs import JobState, JobStore, StaleAttempt
from ingest_pipelines.config import parse_config
from ingest_pipelines.storage import open_store
from ingest_pipelines_tests.bundle_fixtures import ARCHIVE_BUCKET, ARCHIVE_PREFIX, build_tar, bundle_config, keys

T0 = 1_800_000_000.0


class FakeRuns:
    """The runs an orchestrator would report, set by the test; records cancels."""

    def __init__(self) -> None:
        self.by_job: dict[int, list[RunView]] = {}
        self.messages: dict[str, str] = {}
        self.queue_moving = False
        self.canceled: list[tuple[str, str]] = []

    def add(self, job_id: int, run: RunView, message: str = "") -> None:
        self.by_job.setdefault(job_id, []).insert(0, run)
        self.messages[run.run_id] = message

    def runs(self, job: JobState) -> list[RunView]:
        return list(self.by_job.get(job.job_id, []))

    def failure_message(self, run: RunView) -> str:
        return self.messages.get(run.run_id, "")

    def started_since(self, timestamp: float, location: str | None) -> bool:
        return self.queue_moving

    def cancel(self, run: RunView, reason: str) -> None:
        self.canceled.append((run.run_id, reason))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Launcher:
    """launch(job) -> run id, recording (job id, attempt); raises LaunchFailed while `failing` is set."""

    def __init__(self) -> None:
        self.launched: list[tuple[int, int]] = []
        self.failing: str | None = None

    def __call__(self, job: JobState) -> str:
        if self.failing:
            raise LaunchFailed(self.failing)
        self.launched.append((job.job_id, job.attempt))
        return f"run-{job.job_id}-{job.attempt}"


@pytest.fixture
def env(s3_server, s3, tmp_path: Path) -> dict[str, Any]:
    config = parse_config(bundle_config(s3_server, s3, tmp_path, retryDelay="10s", maxAttempts=3, launchTimeout="5m"))
    workflow = config.workflows[0]
    source, archive = open_store(config.source("dropbox")), open_store(config.destination("archive"))
    jobs = JobStore(workflow.jobs_url(config))
    runs, clock = FakeRuns(), Clock()
    source.put_bytes("b.tar", build_tar())
    job = jobs.create(workflow.name, "b.tar", source.head("b.tar").etag, origin="sensor", task="open tar")

    def reconciler() -> BundleReconciler:
        return BundleReconciler(workflow, jobs, source, archive, runs, clock=clock)

    return {
        "workflow": workflow,
        "jobs": jobs,
        "source": source,
        "archive": archive,
        "runs": runs,
        "clock": clock,
        "job": job,
        "reconciler": reconciler,
        "s3": s3,
    }


def _launched_once(env: dict[str, Any], launcher: Launcher) -> JobState:
    env["reconciler"]().reconcile(launcher)
    job = env["jobs"].get(env["job"].job_id)
    env["runs"].add(job.job_id, RunView(f"run-{job.job_id}-{job.attempt}", RUNNING, env["clock"].now, attempt=job.attempt))
    return job


def test_a_new_job_gets_exactly_one_run_even_with_two_reconcilers(env: dict[str, Any]) -> None:
    launcher = Launcher()
    first, second = env["reconciler"](), env["reconciler"]()
    report = first.reconcile(launcher)
    # the other reconciler read the job before the claim: its claim of the same attempt fails
    stale_view = env["job"]
    assert env["jobs"].claim(stale_view.job_id, stale_view.attempt) is None
    second.reconcile(launcher)
    job = env["jobs"].get(env["job"].job_id)
    assert launcher.launched == [(job.job_id, 1)] and report.launched == [job.job_id]
    assert (job.attempt, job.state, job.complete, job.run_id) == (1, "OK", False, f"run-{job.job_id}-1")


def test_a_job_with_a_run_in_progress_is_left_alone(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["clock"].now += 3600
    report = env["reconciler"]().reconcile(launcher)
    assert report.waiting == [job.job_id] and launcher.launched == [(job.job_id, 1)]
    assert env["jobs"].get(job.job_id).exception == ""


def test_a_dead_run_is_retried_with_backoff_and_its_leftovers_removed(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    # the run was killed mid-way: files of its attempt in the job folder, then run monitoring failed it
    env["archive"].put_bytes(f"{job.job_id}/data-a.bin", b"partial")
    env["runs"].by_job[job.job_id] = [RunView(f"run-{job.job_id}-1", FAILED, T0, attempt=1)]
    env["runs"].messages[f"run-{job.job_id}-1"] = "run worker pid 4242 is gone (no such process)"
    env["clock"].now = T0 + 20
    env["reconciler"]().reconcile(launcher)
    waiting = env["jobs"].get(job.job_id)
    assert (waiting.state, waiting.complete, waiting.attempt) == ("OK", False, 1)
    assert "attempt 1 of 3 failed" in waiting.exception and "run worker pid 4242 is gone" in waiting.exception
    assert "next attempt at" in waiting.exception and waiting.retry_at is not None
    assert keys(env["s3"], ARCHIVE_BUCKET) == []
    # not before retryDelay (10 s after the failure was seen)
    env["clock"].now = T0 + 25
    env["reconciler"]().reconcile(launcher)
    assert launcher.launched == [(job.job_id, 1)]
    env["clock"].now = T0 + 31
    env["reconciler"]().reconcile(launcher)
    retried = env["jobs"].get(job.job_id)
    assert launcher.launched == [(job.job_id, 1), (job.job_id, 2)]
    assert retried.attempt == 2 and retried.retry_at is None and retried.exception.startswith("attempt 2 of 3 started at")
    # the second failure waits twice as long (20 s)
    env["runs"].add(job.job_id, RunView(f"run-{job.job_id}-2", CANCELED, env["clock"].now, attempt=2), "canceled from the UI")
    env["reconciler"]().reconcile(launcher)
    due = env["jobs"].get(job.job_id).retry_at
    assert due is not None and due.replace(tzinfo=UTC).timestamp() == T0 + 51


def test_after_max_attempts_the_job_fails_with_the_last_reason(env: dict[str, Any]) -> None:
    launcher = Launcher()
    for attempt in (1, 2, 3):
        job = env["jobs"].get(env["job"].job_id)
        env["clock"].now += 3600
        env["reconciler"]().reconcile(launcher)
        job = env["jobs"].get(job.job_id)
        assert job.attempt == attempt
        env["runs"].add(job.job_id, RunView(f"run-{attempt}", FAILED, env["clock"].now, attempt=attempt), f"S3 error {attempt}")
        env["reconciler"]().reconcile(launcher)
    job = env["jobs"].get(env["job"].job_id)
    assert (job.state, job.complete, job.attempt) == ("FAILED", True, 3)
    assert job.exception.startswith("gave up after 3 attempts (maxAttempts 3); attempt 3: run run-3 failed: S3 error 3")
    env["clock"].now += 3600
    env["reconciler"]().reconcile(launcher)
    assert len(launcher.launched) == 3


def test_a_rejected_bundle_is_not_retried(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["source"].put_bytes("b.tar", b"not a tar" * 100)
    with pytest.raises(Exception, match="Failed to open tarfile"):
        run_job(env["workflow"], env["jobs"], job.job_id, env["source"], env["archive"], attempt=1)
    env["runs"].add(job.job_id, RunView(f"run-{job.job_id}-1", FAILED, T0, attempt=1), "job FAILED at 'open tar'")
    env["clock"].now += 3600
    env["reconciler"]().reconcile(launcher)
    failed = env["jobs"].get(job.job_id)
    assert (failed.state, failed.task, failed.attempt) == ("FAILED", "open tar", 1) and launcher.launched == [(job.job_id, 1)]


def test_a_run_never_started_within_launch_timeout_is_canceled_and_its_job_failed(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["runs"].by_job[job.job_id] = [RunView(f"run-{job.job_id}-1", QUEUED, T0, attempt=1, location="ingest_pipelines.definitions")]
    # the queue is moving (other runs of that location start): a long queue is not a stuck one
    env["runs"].queue_moving = True
    env["clock"].now = T0 + 600
    env["reconciler"]().reconcile(launcher)
    assert env["jobs"].get(job.job_id).state == "OK" and env["runs"].canceled == []
    env["runs"].queue_moving = False
    env["reconciler"]().reconcile(launcher)
    failed = env["jobs"].get(job.job_id)
    expected = (
        f"run run-{job.job_id}-1 was not started within 5m: is a dagster-daemon running with code location 'ingest_pipelines.definitions'?"
    )
    assert (failed.state, failed.complete) == ("FAILED", True) and failed.exception.startswith(expected)
    assert env["runs"].canceled == [(f"run-{job.job_id}-1", expected)]


def test_a_run_created_but_never_submitted_is_failed_so_the_attempt_is_retried(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["runs"].by_job[job.job_id] = [RunView(f"run-{job.job_id}-1", UNSUBMITTED, T0, attempt=1)]
    env["clock"].now = T0 + 30
    env["reconciler"]().reconcile(launcher)
    assert env["runs"].canceled == []
    env["clock"].now = T0 + 61
    env["reconciler"]().reconcile(launcher)
    assert env["runs"].canceled == [(f"run-{job.job_id}-1", "this run was created but never submitted to the run queue")]


def test_a_claim_whose_run_was_never_created_counts_as_a_failed_attempt(env: dict[str, Any]) -> None:
    job = env["jobs"].claim(env["job"].job_id, 0)
    assert job is not None and job.attempt == 1
    env["clock"].now = job.attempt_at.replace(tzinfo=UTC).timestamp() + 30
    launcher = Launcher()
    env["reconciler"]().reconcile(launcher)
    assert env["jobs"].get(job.job_id).retry_at is None
    env["clock"].now += 31
    env["reconciler"]().reconcile(launcher)
    waiting = env["jobs"].get(job.job_id)
    assert "no run was created for attempt 1" in waiting.exception and waiting.retry_at is not None


def test_a_launch_failure_is_a_failed_attempt_retried_later(env: dict[str, Any]) -> None:
    launcher = Launcher()
    launcher.failing = "code location 'ingest_pipelines' is not loadable: connection refused"
    env["reconciler"]().reconcile(launcher)
    job = env["jobs"].get(env["job"].job_id)
    assert (job.state, job.attempt, job.complete) == ("OK", 1, False)
    assert "launching the run failed: code location 'ingest_pipelines' is not loadable" in job.exception
    launcher.failing = None
    env["clock"].now += 11
    env["reconciler"]().reconcile(launcher)
    assert launcher.launched == [(job.job_id, 2)]


def test_a_retry_finds_the_drop_object_gone_and_fails(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["runs"].by_job[job.job_id] = [RunView(f"run-{job.job_id}-1", FAILED, T0, attempt=1)]
    env["reconciler"]().reconcile(launcher)
    env["source"].delete("b.tar")
    env["clock"].now += 3600
    env["reconciler"]().reconcile(launcher)
    failed = env["jobs"].get(job.job_id)
    assert failed.state == "FAILED" and "is gone: the job cannot be retried" in failed.exception and len(launcher.launched) == 1


def test_a_dead_run_that_had_committed_the_folder_completes_the_job(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    run_job(env["workflow"], env["jobs"], job.job_id, env["source"], env["archive"], attempt=1)
    # killed after metadata.json was written, before the job said complete
    env["jobs"].update(job.job_id, task="ingest metadata", task_percent=0.0)
    env["runs"].by_job[job.job_id] = [RunView(f"run-{job.job_id}-1", FAILED, T0, attempt=1)]
    env["reconciler"]().reconcile(launcher)
    done = env["jobs"].get(job.job_id)
    assert (done.state, done.complete) == ("OK", True) and f"{ARCHIVE_PREFIX}{job.job_id}/metadata.json" in keys(env["s3"], ARCHIVE_BUCKET)


def test_a_stale_attempt_neither_writes_nor_removes(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    # attempt 1 was given up for dead, attempt 2 claimed; then attempt 1's run turns up
    assert env["jobs"].claim(job.job_id, 1) is not None
    env["archive"].put_bytes(f"{job.job_id}/written-by-attempt-2", b"x")
    with pytest.raises(StaleAttempt):
        run_job(env["workflow"], env["jobs"], job.job_id, env["source"], env["archive"], attempt=1)
    assert keys(env["s3"], ARCHIVE_BUCKET) == [f"{ARCHIVE_PREFIX}{job.job_id}/written-by-attempt-2"]
    assert env["jobs"].get(job.job_id).attempt == 2


def test_an_administrator_retry_gives_a_failed_job_one_more_attempt(env: dict[str, Any]) -> None:
    launcher = Launcher()
    job = _launched_once(env, launcher)
    env["jobs"].fail(job.job_id, "open tar", "run was not started within 5m")
    env["jobs"].retry(job.job_id, "retry requested by an administrator")
    env["runs"].by_job[job.job_id][0] = RunView(f"run-{job.job_id}-1", CANCELED, T0, attempt=1)
    env["reconciler"]().reconcile(launcher)
    retried = env["jobs"].get(job.job_id)
    assert launcher.launched[-1] == (job.job_id, 2) and (retried.state, retried.complete) == ("OK", False)


def test_job_store_adds_the_attempt_columns_to_an_existing_table(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE bundle_jobs (job_id INTEGER PRIMARY KEY, workflow VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL, "
                "task VARCHAR(64) NOT NULL, task_percent FLOAT NOT NULL, complete BOOLEAN NOT NULL, created DATETIME NOT NULL, "
                "updated DATETIME NOT NULL, exception TEXT NOT NULL, source_key VARCHAR(1024), source_etag VARCHAR(255), "
                "origin VARCHAR(16) NOT NULL, run_id VARCHAR(64))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO bundle_jobs VALUES (7, 'w', 'OK', 'open tar', 0.0, 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00', '', "
                "'a.tar', 'e', 'sensor', NULL)"
            )
        )
    engine.dispose()
    store = JobStore(url)
    old = store.get(7)
    assert (old.attempt, old.retry_at, old.attempt_at) == (0, None, None)
    assert [j.job_id for j in store.unfinished("w")] == [7] and store.claim(7, 0) is not None and store.get(7).attempt == 1


def test_a_launch_error_after_the_run_was_created_does_not_start_another_attempt(env: dict[str, Any]) -> None:
    def half_way(job: JobState) -> str:
        # the run exists (created, maybe queued) when submitting it raises
        env["runs"].add(job.job_id, RunView(f"run-{job.job_id}-{job.attempt}", QUEUED, env["clock"].now, attempt=job.attempt))
        raise LaunchFailed("database is locked")

    env["reconciler"]().reconcile(half_way)
    job = env["jobs"].get(env["job"].job_id)
    assert (job.attempt, job.retry_at, job.exception) == (1, None, "")
    env["clock"].now += 30
    launcher = Launcher()
    env["reconciler"]().reconcile(launcher)
    assert launcher.launched == [] and env["jobs"].get(job.job_id).attempt == 1


def test_job_store_adds_the_attempt_columns_to_an_existing_postgresql_table() -> None:
    import sqlalchemy as sa

    from ingest_pipelines_tests.deploy_fixtures import fresh_database, pg_url

    with fresh_database() as pg_env:
        url = pg_url(pg_env)
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE bundle_jobs (job_id SERIAL PRIMARY KEY, workflow VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL, "
                    "task VARCHAR(64) NOT NULL, task_percent FLOAT NOT NULL, complete BOOLEAN NOT NULL, created TIMESTAMP NOT NULL, "
                    "updated TIMESTAMP NOT NULL, exception TEXT NOT NULL, source_key VARCHAR(1024), source_etag VARCHAR(255), "
                    "origin VARCHAR(16) NOT NULL, run_id VARCHAR(64))"
                )
            )
            conn.execute(
                sa.text(
                    "INSERT INTO bundle_jobs (workflow, state, task, task_percent, complete, created, updated, exception, source_key, "
                    "source_etag, origin) VALUES ('w', 'OK', 'open tar', 0.0, false, now(), now(), '', 'a.tar', 'e', 'sensor')"
                )
            )
        engine.dispose()
        store = JobStore(url)
        (old,) = store.unfinished("w")
        assert (old.attempt, old.retry_at) == (0, None)
        assert store.claim(old.job_id, 0) is not None and store.claim(old.job_id, 0) is None
        assert store.attempt_failed(old.job_id, 1, "attempt 1 failed", store.get(old.job_id).updated)
        assert not store.attempt_failed(old.job_id, 1, "seen twice", store.get(old.job_id).updated)
        store.engine.dispose()
        JobStore._engines.pop(url, None)
