"""The embedded instance's run coordinator: dagster.yaml's `IngestRunCoordinator` is Dagster's queued coordinator
with the limits of `concurrency.runs` in effect, whose queue the daemon checks every half second; whole seconds
still work, and an interval the daemon cannot keep is refused naming the key."""

from __future__ import annotations

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
