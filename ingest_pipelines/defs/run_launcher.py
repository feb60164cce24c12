"""The embedded instance's run launcher: Dagster's DefaultRunLauncher, plus a health check that tells run
monitoring whether a run worker on this host is still alive, so a killed run is failed instead of left STARTED.

Dagster's DefaultRunLauncher cannot tell (`supports_check_run_worker_health` is false): a run whose worker
was killed (kill -9, OOM, the daemon's process group stopped) stays STARTED for good, holds its
`ingest/serial` slot and counts against `max_concurrent_runs`. The worker's pid is in the run's event log
("Started process for run (pid: N)"); where the code server that started it is on this host (localhost or
a socket), `/proc` says whether that process still lives.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG

#: a process that started more than this after the run worker reported its pid is another process (pid reused).
PID_REUSE_SLACK_SECONDS = 5.0
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers can be health-checked when they run on this host."""

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
    """Whether the code server that started the run's worker (tag `.dagster/grpc_info`) is on this host."""
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
