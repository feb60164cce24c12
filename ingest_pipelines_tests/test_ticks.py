"""Sensors tick every `interval` under Dagster's daemon: the minimum interval handed to Dagster makes the tick
the first loop iteration at which `interval` has passed, never the one after it, whatever the loop's jitter."""

from __future__ import annotations

import random

import pytest
from dagster._daemon import sensor as dagster_sensor_daemon

from ingest_pipelines.defs.ticks import DAEMON_LOOP_SECONDS, min_interval_seconds


def test_the_loop_period_is_the_sensor_daemons() -> None:
    assert dagster_sensor_daemon.MIN_INTERVAL_LOOP_TIME == DAEMON_LOOP_SECONDS


def _tick_gaps(min_interval: int, jitter: float, loops: int = 400, seed: int = 3) -> list[float]:
    """Dagster's rule, simulated: the loop starts every DAEMON_LOOP_SECONDS (± jitter, where the sensor's tick is
    stamped); a sensor ticks when at least `min_interval` seconds have passed since its last tick."""
    rng = random.Random(seed)
    last = None
    gaps = []
    for index in range(loops):
        now = index * DAEMON_LOOP_SECONDS + rng.uniform(-jitter, jitter)
        if last is None or now - last >= min_interval:
            if last is not None:
                gaps.append(now - last)
            last = now
    return gaps


@pytest.mark.parametrize("interval", [1, 4, 5, 6, 9.5, 10, 14, 15, 29, 30, 45, 60, 300])
def test_a_sensor_ticks_at_the_first_loop_after_its_interval(interval: float) -> None:
    due = -(-interval // DAEMON_LOOP_SECONDS) * DAEMON_LOOP_SECONDS  # the first loop at or after `interval`
    gaps = _tick_gaps(min_interval_seconds(interval), jitter=0.4)
    assert gaps, "the sensor ticked"
    assert max(gaps) < due + 1, "a tick skipped the loop iteration at which its interval had passed"
    assert min(gaps) > max(interval, DAEMON_LOOP_SECONDS) - 1, "a tick came more than jitter early"


def test_dagsters_own_rounding_skips_loops_at_multiples_of_its_period() -> None:
    # what the product did before: `int(interval)` as the minimum ticked every 5 or 10 s at `interval: 5s`
    gaps = _tick_gaps(5, jitter=0.4)
    assert max(gaps) > 9 and min(gaps) < 6
    assert min_interval_seconds(5) == 4 and min_interval_seconds(6) == 6 and min_interval_seconds(0.2) == 1
