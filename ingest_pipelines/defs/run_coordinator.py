"""The embedded instance's run coordinator: Dagster's QueuedRunCoordinator, with a queue the daemon may check
more often than once a second.

Every run the sensors, the UI and `ingest-pipelines serve` submit waits in the queue until the daemon's next
dequeue. Dagster's `dequeue_interval_seconds` is a whole number (at least 1 s, 5 s by default): a run waited
0.5-1.5 s there, the largest fixed cost of a small sync run (500 objects: 0.7 s of 2.9 s from the first tick
to the last object). Here it may be a fraction; the daemon's loop waits in steps of 0.5 s, so 0.5 is the
shortest interval that takes effect. Everything else (limits under `concurrency.runs`, tag limits, threads)
is the QueuedRunCoordinator's.

A run submitted in the daemon's own process (a sensor's, a schedule's, a backfill's) does not wait for the next
check: the dequeuing thread waits for a submission at the start of each check, up to the interval (at most 5 s,
so that stopping the daemon never waits longer), and looks at the queue as soon as one comes
(`IngestInstance.get_concurrency_config` calls `wait_for_submission`). Runs from other processes (the UI,
`ingest-pipelines serve`) are found by the check every interval, as before.

    run_coordinator:
      module: ingest_pipelines.defs.run_coordinator
      class: IngestRunCoordinator
      config:
        dequeue_interval_seconds: 0.5
"""

from __future__ import annotations

import math
import threading
from typing import Any

from dagster import Field
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext
from dagster._core.storage.dagster_run import DagsterRun

#: the daemon's loop (`IntervalDaemon.core_loop`) sleeps in steps of this: a shorter interval changes nothing
LOOP_STEP_SECONDS = 0.5
DEFAULT_DEQUEUE_SECONDS = 0.5
#: the thread Dagster's daemon controller runs the dequeuing daemon in (`dagster-daemon-{daemon_type}`)
DEQUEUE_THREAD = "dagster-daemon-QUEUED_RUN_COORDINATOR"
#: the longest a check waits for a submission: the daemon's shutdown waits for a check in progress
MAX_SUBMISSION_WAIT_SECONDS = 5.0
#: set when a run is submitted in this process, cleared by the dequeuing thread as it looks at the queue
_SUBMITTED = threading.Event()


class IngestRunCoordinator(QueuedRunCoordinator):
    """QueuedRunCoordinator whose `dequeue_interval_seconds` may be a fraction of a second (default 0.5). Its
    `from_config_value` (Dagster's) builds `cls` from the config: only the schema and the interval differ."""

    def __init__(self, dequeue_interval_seconds: float | None = None, **kwargs: Any):
        seconds = DEFAULT_DEQUEUE_SECONDS if dequeue_interval_seconds is None else float(dequeue_interval_seconds)
        if not math.isfinite(seconds) or seconds < LOOP_STEP_SECONDS:
            raise ValueError(
                f"run_coordinator: dequeue_interval_seconds must be at least {LOOP_STEP_SECONDS} "
                f"(the daemon checks the queue in steps of {LOOP_STEP_SECONDS} s), got {dequeue_interval_seconds!r}"
            )
        super().__init__(dequeue_interval_seconds=max(1, math.ceil(seconds)), **kwargs)
        self._dequeue_interval_seconds = seconds  # type: ignore[assignment]  # Dagster's own check wants an int

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        schema = dict(super().config_type())
        schema["dequeue_interval_seconds"] = Field(
            config=float,
            is_required=False,
            default_value=DEFAULT_DEQUEUE_SECONDS,
            description="how often the daemon checks the run queue, in seconds (at least 0.5)",
        )
        return schema

    @property
    def dequeue_interval_seconds(self) -> float:  # type: ignore[override]
        return self._dequeue_interval_seconds

    def submit_run(self, context: SubmitRunContext) -> DagsterRun:
        run = super().submit_run(context)
        _SUBMITTED.set()
        return run

    def wait_for_submission(self) -> None:
        """In the dequeuing daemon's thread, before it reads the queue: wait up to the interval (at most
        MAX_SUBMISSION_WAIT_SECONDS) for a run submitted in this process. With none, the check takes the whole
        interval and the daemon's loop starts the next one at once: the queue is still read at least every interval."""
        _SUBMITTED.wait(min(self._dequeue_interval_seconds, MAX_SUBMISSION_WAIT_SECONDS))
        _SUBMITTED.clear()
