"""A one-op job for the warm run worker tests: it writes the pid of the process it ran in to $WARM_WORKER_OUT,
then waits for $WARM_WORKER_GATE to exist (if set), so a test can interrupt it mid-run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg


@dg.op
def record_pid() -> None:
    Path(os.environ["WARM_WORKER_OUT"]).write_text(str(os.getpid()))
    gate = os.environ.get("WARM_WORKER_GATE")
    deadline = time.monotonic() + 60
    while gate and not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval of a bounded wait for the test's signal


@dg.job(executor_def=dg.in_process_executor)
def warm_worker_job() -> None:
    record_pid()
