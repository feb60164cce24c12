"""Shared pieces for benchmarks: a moto server process, a timer, peak memory and the ratio table."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed() -> Iterator[dict[str, float]]:
    """`with timed() as t: ...` then t["seconds"]."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


def peak_rss_mib(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children) in MiB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def print_ratios(title: str, unit: str, ours: tuple[str, float], baselines: list[tuple[str, float]]) -> dict[str, float]:
    """Print `ours` and each baseline as a rate and as ours/baseline (higher rate = faster)."""
    name, rate = ours
    print(f"{title} ({unit}, higher is better)")
    print(f"  {name:<40} {rate:>12.1f}")
    ratios = {}
    for base_name, base_rate in baselines:
        ratio = rate / base_rate if base_rate else float("nan")
        ratios[base_name] = ratio
        print(f"  {base_name:<40} {base_rate:>12.1f}   ours/baseline = {ratio:.2f}")
    return ratios
