"""How the HTTP front door launches a bundle run without waiting for the sensor: it opens the code location
like `dagster job launch` does (a workspace with a gRPC code server), adds the dynamic partition and submits
a run of the ingest job to the instance's run coordinator (the daemon dequeues it when the coordinator is queued).

The code location is found the way the daemon finds it (workspace.yaml in the working folder, else
pyproject.toml's [tool.dagster]), so that the run names a location the daemon loads; `location_report` checks
that against what the instance's daemon is doing.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import InstigatorType
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget, PyProjectFileTarget, WorkspaceFileTarget

from ingest_pipelines.bundles.attempts import LaunchFailed
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.jobs import JobState
from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs.bundles.jobs import ingest_job_name
from ingest_pipelines.defs.bundles.partitions import partitions_name
from ingest_pipelines.defs.bundles.reconcile import attempt_tags

log = logging.getLogger(__name__)

DEFAULT_MODULE = "ingest_pipelines.definitions"
#: the project's code location name (workspace.yaml, pyproject.toml [tool.dagster]): used for the default module too
DEFAULT_LOCATION = "ingest_pipelines"
#: a daemon heartbeat older than this counts as no daemon
HEARTBEAT_SECONDS = 120.0

#: kept for callers of the earlier name: a launch failure
LaunchError = LaunchFailed


@dataclass(frozen=True)
class LocationTarget:
    """Where the front door loads its code location from, and why (for the start-up log)."""

    target: Any
    description: str


def find_location_target(
    module: str | None = None, workspace_file: str | None = None, location_name: str | None = None, cwd: Path | None = None
) -> LocationTarget:
    """`--workspace`, else `--module`, else the daemon's own defaults in the working folder: workspace.yaml,
    then pyproject.toml with [tool.dagster]; else the default module under the project's location name."""
    folder = cwd or Path.cwd()
    if workspace_file:
        return LocationTarget(WorkspaceFileTarget(paths=[workspace_file]), f"--workspace {workspace_file}")
    if module:
        return LocationTarget(
            ModuleTarget(module_name=module, attribute=None, working_directory=None, location_name=location_name), f"--module {module}"
        )
    for name in ("workspace.yaml", "workspace.yml"):
        if (folder / name).exists():
            return LocationTarget(WorkspaceFileTarget(paths=[str(folder / name)]), f"{folder / name} (as the daemon finds it)")
    pyproject = folder / "pyproject.toml"
    if pyproject.exists() and "[tool.dagster]" in pyproject.read_text(errors="replace"):
        return LocationTarget(PyProjectFileTarget(str(pyproject)), f"{pyproject} [tool.dagster] (as the daemon finds it)")
    target = ModuleTarget(
        module_name=DEFAULT_MODULE, attribute=None, working_directory=None, location_name=location_name or DEFAULT_LOCATION
    )
    return LocationTarget(target, f"module {DEFAULT_MODULE} (no workspace.yaml or [tool.dagster] in {folder})")


class RunSubmitter:
    """`with RunSubmitter(instance) as submit: run_id = submit(workflow, job)`; raises LaunchFailed.

    After a failed launch the workspace is reloaded (a new code server), so a killed code server costs one attempt."""

    def __init__(
        self,
        instance: dg.DagsterInstance | None = None,
        module: str | None = None,
        workspace_file: str | None = None,
        location_name: str | None = None,
        cwd: Path | None = None,
    ):
        self.instance = instance or dg.DagsterInstance.get()
        self.location = find_location_target(module, workspace_file, location_name, cwd)
        self.target = self.location.target
        self.location_name = location_name
        self._context: WorkspaceProcessContext | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> RunSubmitter:
        self._context = WorkspaceProcessContext(self.instance, self.target)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def location_names(self) -> list[str]:
        """The code locations the front door loaded (the one its runs name is among them)."""
        if self._context is None:
            return []
        return list(self._context.create_request_context().get_code_location_entries())

    def __call__(self, workflow: BundleWorkflow, job: JobState) -> str:
        if self._context is None:
            raise LaunchFailed("RunSubmitter used outside its `with` block")
        with self._lock:
            try:
                return self._submit(workflow, job)
            except LaunchFailed:
                self._reload()
                raise
            except Exception as exc:
                self._reload()
                raise LaunchFailed(f"{type(exc).__name__}: {str(exc).strip()[:500]}") from exc

    def _reload(self) -> None:
        assert self._context is not None
        try:
            self._context.reload_workspace()
        except Exception:  # the next launch tries again
            log.warning("reloading the code location failed", exc_info=True)

    def _submit(self, workflow: BundleWorkflow, job: JobState) -> str:
        assert self._context is not None
        partition = str(job.job_id)
        self.instance.add_dynamic_partitions(partitions_name(workflow), [partition])
        workspace = self._context.create_request_context()
        location, repository, remote_job = self._find_job(workspace, ingest_job_name(workflow))
        run_tags = {**remote_job.tags, **attempt_tags(job), PARTITION_NAME_TAG: partition}
        plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None, known_state=None, instance=self.instance)
        snapshot = plan.execution_plan_snapshot
        run = self.instance.create_run(
            job_name=remote_job.name,
            run_id=None,
            run_config={},
            resolved_op_selection=None,
            step_keys_to_execute=snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=run_tags,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        self.instance.submit_run(run.run_id, workspace)
        return run.run_id

    def _find_job(self, workspace: Any, job_name: str) -> tuple[Any, Any, RemoteJob]:
        errors = [entry.load_error for entry in workspace.get_code_location_entries().values() if entry.load_error]
        for entry in workspace.get_code_location_entries().values():
            location = entry.code_location
            if location is None or (self.location_name and location.name != self.location_name):
                continue
            for repository in location.get_repositories().values():
                if repository.has_job(job_name):
                    return location, repository, repository.get_full_job(job_name)
        detail = "; ".join(str(error.message).strip() for error in errors) if errors else "no code location has it"
        raise LaunchFailed(f"job {job_name!r} not found ({detail})")


def location_report(instance: dg.DagsterInstance, location: str, workflows: list[BundleWorkflow]) -> list[tuple[int, str]]:
    """What the front door can tell at start about whether the instance's daemon will start its runs:
    (logging level, message) pairs. Looks at daemon heartbeats and at which code location the daemon ticks
    the workflows' drop sensors in (their instigator states)."""
    messages: list[tuple[int, str]] = []
    queued = isinstance(instance.run_coordinator, QueuedRunCoordinator)
    if not queued:
        messages.append((logging.INFO, f"runs are launched at once by the instance's run coordinator (code location {location!r})"))
    now = time.time()
    beats = [beat for beat in instance.get_daemon_heartbeats().values() if now - beat.timestamp < HEARTBEAT_SECONDS]
    if queued and not beats:
        messages.append(
            (
                logging.WARNING,
                f"no dagster-daemon heartbeat on this instance in the last {HEARTBEAT_SECONDS:.0f}s: queued runs will not start "
                f"until one runs (`dagster-daemon run -w workspace.yaml`, code location {location!r}); a job whose run is not "
                "started within its workflow's launchTimeout is FAILED",
            )
        )
    sensors = {f"{dagster_name(w.name)}__drop_sensor" for w in workflows}
    ticked: dict[str, float] = {}
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name not in sensors:
            continue
        data = state.instigator_data
        last = float(getattr(data, "last_tick_start_timestamp", None) or getattr(data, "last_tick_timestamp", None) or 0.0)
        name = state.origin.repository_origin.code_location_origin.location_name
        ticked[name] = max(ticked.get(name, 0.0), last)
    if ticked:
        newest = max(ticked, key=lambda name: ticked[name])
        if newest != location:
            messages.append(
                (
                    logging.WARNING,
                    f"the dagster-daemon of this instance runs the drop sensor in code location {newest!r}, but the front door "
                    f"submits runs to code location {location!r}: the daemon will not start them "
                    f"(DagsterCodeLocationNotFoundError). Start `ingest-pipelines serve` in the folder of the daemon's "
                    f"workspace.yaml, or give --workspace / --location-name {newest}",
                )
            )
        else:
            messages.append((logging.INFO, f"code location {location!r} is the one the instance's dagster-daemon runs"))
    elif queued and beats:
        messages.append(
            (
                logging.INFO,
                f"a dagster-daemon is running; no drop sensor tick recorded yet, so its code location could not be compared "
                f"with {location!r}",
            )
        )
    return messages
