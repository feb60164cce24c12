"""The embedded instance's run launcher: Dagster's DefaultRunLauncher, plus a warm run worker for code locations
this process runs itself, and a health check that tells run monitoring whether a run worker on this host is
still alive, so a killed run is failed instead of left STARTED.

Warm worker: DefaultRunLauncher asks the code server to start each run, which spawns a new interpreter that
imports Dagster and loads the code location (about a second on a 2-core machine, before the first step). For a
code location from workspace.yaml that this process started (a `python_module` / `python_file` entry run by the
daemon's own Python, in its folder and environment, where the code server's run worker would run too), the
launcher keeps one `ingest_pipelines.defs.run_worker` process ready, hands it the run and starts the next one.
Everything else (a code server started elsewhere, another Python, `warm_worker: false`, no ready worker) goes
through the code server as before. The daemon starts the first one when it starts (`IngestInstance`).

Dagster's DefaultRunLauncher cannot tell (`supports_check_run_worker_health` is false): a run whose worker
was killed (kill -9, OOM, the daemon's process group stopped) stays STARTED for good, holds its
`ingest/serial` slot and counts against `max_concurrent_runs`. The worker's pid is in the run's event log
("Started process for run (pid: N)"); where the code server that started it is on this host (localhost or
a socket), `/proc` says whether that process still lives.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from dagster import Field
from dagster._core.events import DagsterEventType, EngineEventData
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, LaunchRunContext, WorkerStatus
from dagster._core.remote_origin import ManagedGrpcPythonEnvCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData, serialize_value

#: a process that started more than this after the run worker reported its pid is another process (pid reused).
PID_REUSE_SLACK_SECONDS = 5.0
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}
#: run tag: the host whose warm worker runs the run (its pid is in the run's engine events)
WARM_WORKER_TAG = "ingest/warm_worker_host"


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher with a warm run worker for local code locations; its run workers can be
    health-checked when they run on this host."""

    def __init__(self, inst_data: ConfigurableClassData | None = None, warm_worker: bool = True):
        super().__init__(inst_data=inst_data)
        self.warm_worker = warm_worker

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {
            "warm_worker": Field(
                bool, is_required=False, default_value=True, description="keep a run worker ready for local code locations"
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]) -> Self:
        return cls(inst_data=inst_data, warm_worker=config_value.get("warm_worker", True))

    def prestart(self) -> None:
        """Get a warm worker ready now (the daemon, as it starts), so its first run does not wait for one; only
        where the daemon's command line says it starts code servers with its own Python."""
        if self.warm_worker and loads_code_itself(sys.argv[2:]):
            WARM_WORKERS.ready()

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        local = self.warm_worker and _runs_here(run)
        worker = WARM_WORKERS.take() if local else None
        if worker is None:
            super().launch_run(context)
            if local:
                WARM_WORKERS.ready()
            return
        from dagster._grpc.types import ExecuteRunArgs

        self._instance.add_run_tags(run.run_id, {WARM_WORKER_TAG: socket.gethostname()})
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())  # type: ignore[arg-type]
        try:
            line = memoryview(serialize_value(args).encode() + b"\n")
            while line:  # an unbuffered pipe may take a long line in parts
                line = line[worker.stdin.write(line) or 0 :]  # type: ignore[union-attr]
            worker.stdin.close()  # type: ignore[union-attr]
        except OSError:  # it died while it waited: the code server starts the run
            WARM_WORKERS.ready()
            super().launch_run(context)
            return
        self._instance.report_engine_event(
            f"Run handed to the warm run worker (pid: {worker.pid}).", run, EngineEventData.in_process(worker.pid), cls=self.__class__
        )
        WARM_WORKERS.ready()

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or run.is_finished or run.tags.get(WARM_WORKER_TAG) != socket.gethostname():
            return super().terminate(run_id)
        self._instance.report_run_canceling(run)
        started = self._worker_start(run)
        if started is None or not process_alive(*started)[0]:
            self._instance.report_engine_event("The run's warm worker is gone; nothing to interrupt.", run, cls=self.__class__)
            return False
        os.kill(started[0], signal.SIGINT)  # what the code server's cancel does to its run workers: an interrupt
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if not _worker_on_this_host(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker is on another host; not checked")
        started = self._worker_start(run)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker has not reported its pid yet")
        pid, reported_at = started
        alive, why = process_alive(pid, reported_at)
        if alive:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive", run_worker_id=str(pid))
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker pid {pid} is gone ({why})", run_worker_id=str(pid))

    def _worker_start(self, run: DagsterRun) -> tuple[int, float] | None:
        """The newest "Started process for run (pid: N)" engine event of the run: (pid, its timestamp)."""
        records = self._instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT, ascending=False, limit=50).records
        for record in records:
            event = record.event_log_entry
            data = event.dagster_event.engine_event_data if event.dagster_event else None
            pid = (data.metadata or {}).get("pid") if data else None
            if pid is not None and str(getattr(pid, "value", pid)).isdigit():
                return int(str(getattr(pid, "value", pid))), event.timestamp
        return None


def _worker_on_this_host(run: DagsterRun) -> bool:
    """Whether the run's worker is a warm worker of this host, or was started by a code server on this host
    (tag `.dagster/grpc_info`)."""
    if run.tags.get(WARM_WORKER_TAG) == socket.gethostname():
        return True
    info = run.tags.get(GRPC_INFO_TAG)
    if not info:
        return False
    try:
        grpc = json.loads(info)
    except ValueError:
        return False
    if grpc.get("socket"):
        return True
    host = str(grpc.get("host") or "")
    return host in _LOCAL_HOSTS or host == socket.gethostname()


def process_alive(pid: int, started_before: float) -> tuple[bool, str]:
    """Whether process `pid` runs and is the one that existed at `started_before` (not a reused pid, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, "no such process"
    except PermissionError:
        pass  # it exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True, "alive (no /proc to check further)"
    if fields[0] in ("Z", "X"):
        return False, "exited (zombie)"
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        process_start = boot + int(fields[19]) / ticks
    except (OSError, ValueError, StopIteration, IndexError):
        return True, "alive"
    if process_start > started_before + PID_REUSE_SLACK_SECONDS:
        return False, "its pid now belongs to a newer process"
    return True, "alive"


def _runs_here(run: DagsterRun) -> bool:
    """Whether the run's code location is one this process's workspace started with this Python (where the
    code server's own run worker would run: the same interpreter, folder and environment as this process)."""
    origin = run.remote_job_origin
    location = origin.repository_origin.code_location_origin if origin else None
    if not isinstance(location, ManagedGrpcPythonEnvCodeLocationOrigin) or run.job_code_origin is None:
        return False
    executable = run.job_code_origin.repository_origin.executable_path
    return bool(executable) and os.path.abspath(executable) == os.path.abspath(sys.executable)


#: workspace.yaml entries the daemon starts a code server for itself (a run worker could run beside it)
_MANAGED_ENTRIES = ("python_module", "python_file", "python_package", "autoload_defs_module")


def loads_code_itself(args: list[str]) -> bool:
    """Whether a `dagster-daemon run` with these arguments starts its code locations' servers itself with its own
    Python (a module, a file or a workspace.yaml with such entries, not only `grpc_server` entries as `dagster
    dev` gives it, nor only entries with another `executable_path`)."""
    workspaces = []
    for i, arg in enumerate(args):
        if arg in ("-m", "--module-name", "-f", "--python-file", "--package-name", "--autoload-defs-module-name"):
            return True
        if arg in ("-w", "--workspace") and i + 1 < len(args):
            workspaces.append(Path(args[i + 1]))
        elif arg.startswith("--workspace="):
            workspaces.append(Path(arg.split("=", 1)[1]))
    if not workspaces:
        if not Path("workspace.yaml").exists():
            return Path("pyproject.toml").exists()  # [tool.dagster] module_name: a module
        workspaces = [Path("workspace.yaml")]
    for path in workspaces:
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        for entry in document.get("load_from") or []:
            for key, target in entry.items() if isinstance(entry, dict) else []:
                executable = target.get("executable_path") if isinstance(target, dict) else None
                # another Python's code location gets its run workers from its code server
                if key in _MANAGED_ENTRIES and (not executable or os.path.abspath(executable) == os.path.abspath(sys.executable)):
                    return True
    return False


class WarmWorkers:
    """One `ingest_pipelines.defs.run_worker` process kept ready (per process: the daemon's run coordinator may
    launch from several threads, and an instance may be made more than once). It ends with this process: its
    stdin closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None

    def ready(self) -> None:
        """Start a worker unless one is waiting."""
        with self._lock:
            if self._spare is not None and self._spare.poll() is None:
                return
            self._spare = subprocess.Popen(
                [sys.executable, "-m", "ingest_pipelines.defs.run_worker"],
                stdin=subprocess.PIPE,
                bufsize=0,  # the run's line goes to the pipe as written: nothing waits in this process's buffer
                cwd=os.getcwd(),
                env=os.environ.copy(),
            )
            # reap it when it ends: an exited worker left a zombie would still look present to `ps`
            threading.Thread(target=self._spare.wait, name="warm-run-worker-reaper", daemon=True).start()

    def take(self) -> subprocess.Popen[bytes] | None:
        """The waiting worker, if one is alive (it is no longer spare)."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is None:
            return spare
        return None


WARM_WORKERS = WarmWorkers()
