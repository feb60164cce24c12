"""The embedded instance's run coordinator: dagster.yaml's `IngestRunCoordinator` is Dagster's queued coordinator
with the limits of `concurrency.runs` in effect, whose queue the daemon checks every half second; whole seconds
still work, and an interval the daemon cannot keep is refused naming the key."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._daemon.controller import create_daemon_of_type
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from ingest_pipelines.defs.run_coordinator import IngestRunCoordinator
from ingest_pipelines_tests.bundle_fixtures import project_home
from ingest_pipelines_tests.conftest import REPO_ROOT


def _home(tmp_path: Path, interval: object | None) -> Path:
    """A DAGSTER_HOME with the project's dagster.yaml, its dequeue interval set to `interval` (None: removed)."""
    document = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    config = document["run_coordinator"].setdefault("config", {})
    if interval is None:
        config.pop("dequeue_interval_seconds", None)
    else:
        config["dequeue_interval_seconds"] = interval
    return project_home(tmp_path / "home", yaml.safe_dump(document))


def test_the_shipped_instance_dequeues_every_half_second_within_its_run_limits(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(project_home(tmp_path / "home"))) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, IngestRunCoordinator)
        assert isinstance(coordinator, QueuedRunCoordinator), "Dagster treats it as the queued coordinator"
        assert coordinator.dequeue_interval_seconds == 0.5
        # the daemon Dagster's controller makes for this instance polls at that interval
        daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
        assert isinstance(daemon, QueuedRunCoordinatorDaemon)
        assert daemon.interval_seconds == 0.5
        assert QueuedRunCoordinatorDaemon.daemon_type() in instance.get_required_daemon_types()
        # the limits the dequeuing daemon reads: dagster.yaml's concurrency.runs
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert queue.max_concurrent_runs == 4
        assert {"key": "ingest/serial", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in queue.tag_concurrency_limits


@pytest.mark.parametrize(("interval", "expected"), [(None, 0.5), (1, 1.0), (5, 5.0), (0.75, 0.75)])
def test_whole_seconds_and_fractions_are_taken(tmp_path: Path, interval: object, expected: float) -> None:
    with dg.DagsterInstance.from_config(str(_home(tmp_path, interval))) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == expected  # type: ignore[attr-defined]
        assert create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance).interval_seconds == expected  # type: ignore[attr-defined]


@pytest.mark.parametrize("interval", [0.1, 0, -1])
def test_an_interval_below_the_daemons_step_is_refused_naming_the_key(tmp_path: Path, interval: float) -> None:
    with pytest.raises(Exception, match=r"dequeue_interval_seconds must be at least 0\.5") as raised:
        with dg.DagsterInstance.from_config(str(_home(tmp_path, interval))) as instance:
            instance.run_coordinator  # noqa: B018  # loaded on first use
    assert str(interval) in str(raised.value)


def test_a_value_that_is_not_a_number_is_refused_by_the_schema(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="dequeue_interval_seconds"):
        with dg.DagsterInstance.from_config(str(_home(tmp_path, "soon"))) as instance:
            instance.run_coordinator  # noqa: B018


def _iteration_seconds(instance: dg.DagsterInstance, submit_after: float | None = None) -> float:
    """One iteration of Dagster's dequeuing daemon, in the thread the daemon controller gives it; a run is submitted
    in this process `submit_after` seconds into it (None: none). How long the iteration took, from its start."""
    from types import SimpleNamespace

    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.run_coordinator import SubmitRunContext

    from ingest_pipelines.defs.run_coordinator import DEQUEUE_THREAD

    daemon = create_daemon_of_type(QueuedRunCoordinatorDaemon.daemon_type(), instance)
    timing: dict[str, float] = {}

    def iterate() -> None:
        started = time.monotonic()
        # the daemon reads nothing but the instance from its context while it launches no run
        for _ in daemon.run_iteration(SimpleNamespace(instance=instance)):  # type: ignore[arg-type]
            pass
        timing["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=iterate, name=DEQUEUE_THREAD)
    thread.start()
    if submit_after is not None:
        time.sleep(submit_after)
        # a queued run names where its job lives (it is never launched here: no run slot)
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("nowhere"), "__repository__"), "_queued_job")
        run = instance.create_run_for_job(_queued_job, remote_job_origin=origin)
        instance.run_coordinator.submit_run(SubmitRunContext(run, workspace=None))  # type: ignore[arg-type]
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.QUEUED  # type: ignore[union-attr]
    thread.join(timeout=120)
    assert not thread.is_alive()
    return timing["seconds"]


@dg.op
def _noop() -> None:
    pass


@dg.job
def _queued_job() -> None:
    _noop()


def _home_launching_nothing(tmp_path: Path, interval: float) -> Path:
    """The project's dagster.yaml with `interval` and no run slot: the daemon dequeues nothing, so a test needs no code location."""
    document = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    document["run_coordinator"]["config"]["dequeue_interval_seconds"] = interval
    document["concurrency"]["runs"]["max_concurrent_runs"] = 0
    return project_home(tmp_path / "home", yaml.safe_dump(document))


def test_the_daemon_looks_at_the_queue_as_soon_as_a_run_is_submitted_in_its_process(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(_home_launching_nothing(tmp_path, 5))) as instance:
        # a sensor of the daemon submits 0.3 s into a check: the check waited for it (it did not read the queue
        # before) and went on at once, not at the end of the interval
        seconds = _iteration_seconds(instance, submit_after=0.3)
        assert 0.3 <= seconds < 4


def test_with_nothing_submitted_a_check_takes_the_interval_and_other_threads_never_wait(tmp_path: Path) -> None:
    with dg.DagsterInstance.from_config(str(_home_launching_nothing(tmp_path, 1.5))) as instance:
        # the check waits out its interval (so the daemon's loop starts the next one at once: the queue is still read every interval)
        assert _iteration_seconds(instance) >= 1.4
        # anyone else asking for the concurrency settings (the UI, the run launcher) gets them without waiting
        started = time.monotonic()
        for _ in range(3):
            assert instance.get_concurrency_config().run_queue_config is not None
        assert time.monotonic() - started < 1.0
