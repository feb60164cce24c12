"""How often the product's sensors tick under Dagster's daemon.

The sensor daemon evaluates due sensors in a loop that starts every 5 s (`MIN_INTERVAL_LOOP_TIME` in
dagster/_daemon/sensor.py), and a sensor is due when at least its `minimum_interval_seconds` have passed since
its last tick began. A minimum interval that is a multiple of the loop's period is met or missed by
milliseconds of jitter: a sync workflow with `interval: 5s` ticked every 5 or 10 s at random (its daemon log
showed both), 15 s every 15 or 20 s, a bundle workflow's 30 s every 30 or 35 s. Asking for one second less
makes the tick the loop iteration at which the interval has passed, every time; other intervals are left as
they are (the loop's period rounds them up the same way either way).
"""

from __future__ import annotations

import math

#: the period of Dagster's sensor daemon loop
DAEMON_LOOP_SECONDS = 5


def min_interval_seconds(interval: float) -> int:
    """Dagster's `minimum_interval_seconds` for a sensor meant to tick every `interval` seconds."""
    whole = max(1, math.ceil(interval))
    return whole - 1 if whole % DAEMON_LOOP_SECONDS == 0 else whole
