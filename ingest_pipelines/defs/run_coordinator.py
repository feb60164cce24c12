"""The embedded instance's run coordinator: Dagster's QueuedRunCoordinator, with a queue the daemon may check
more often than once a second.

Every run the sensors, the UI and `ingest-pipelines serve` submit waits in the queue until the daemon's next
dequeue. Dagster's `dequeue_interval_seconds` is a whole number (at least 1 s, 5 s by default): a run waited
0.5-1.5 s there, the largest fixed cost of a small sync run (500 objects: 0.7 s of 2.9 s from the first tick
to the last object). Here it may be a fraction; the daemon's loop waits in steps of 0.5 s, so 0.5 is the
shortest interval that takes effect. Everything else (limits under `concurrency.runs`, tag limits, threads)
is the QueuedRunCoordinator's.

    run_coordinator:
      module: ingest_pipelines.defs.run_coordinator
      class: IngestRunCoordinator
      config:
        dequeue_interval_seconds: 0.5
"""

from __future__ import annotations

import math
from typing import Any

from dagster import Field
from dagster._core.run_coordinator import QueuedRunCoordinator

#: the daemon's loop (`IntervalDaemon.core_loop`) sleeps in steps of this: a shorter interval changes nothing
LOOP_STEP_SECONDS = 0.5
DEFAULT_DEQUEUE_SECONDS = 0.5


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
