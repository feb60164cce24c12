"""How the HTTP front door launches a bundle run without waiting for the sensor: it opens the code location
like `dagster job launch` does (a workspace with a gRPC code server), adds the dynamic partition and submits
a run of the ingest job to the instance's run coordinator (the daemon dequeues it when the coordinator is queued)."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
from dagster._core.remote_representation.external import RemoteJob
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget, WorkspaceFileTarget

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.defs.bundles.jobs import ingest_job_name
from ingest_pipelines.defs.bundles.partitions import partitions_name

DEFAULT_MODULE = "ingest_pipelines.definitions"


class LaunchError(RuntimeError):
    """The run could not be submitted (code location not loadable, job missing)."""


class RunSubmitter:
    """`with RunSubmitter(instance) as submit: run_id = submit(workflow, job_id)`.

    The code location is the same as the webserver's and daemon's (`-m ingest_pipelines.definitions`, or a
    workspace.yaml), so the run's origin names a location the daemon knows."""

    def __init__(
        self,
        instance: dg.DagsterInstance | None = None,
        module: str = DEFAULT_MODULE,
        workspace_file: str | None = None,
        location_name: str | None = None,
    ):
        self.instance = instance or dg.DagsterInstance.get()
        if workspace_file:
            self.target: Any = WorkspaceFileTarget(paths=[workspace_file])
        else:
            self.target = ModuleTarget(module_name=module, attribute=None, working_directory=None, location_name=location_name)
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

    def __call__(self, workflow: BundleWorkflow, job_id: int, tags: dict[str, str] | None = None) -> str:
        if self._context is None:
            raise LaunchError("RunSubmitter used outside its `with` block")
        partition = str(job_id)
        with self._lock:
            self.instance.add_dynamic_partitions(partitions_name(workflow), [partition])
            workspace = self._context.create_request_context()
            location, repository, remote_job = self._find_job(workspace, ingest_job_name(workflow))
            run_tags = {**remote_job.tags, **(tags or {}), PARTITION_NAME_TAG: partition, "ingest/bundle_job": partition}
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
        raise LaunchError(f"job {job_name!r} not found ({detail})")
