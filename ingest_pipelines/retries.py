"""The retry policy of the product's own reconciliation: how long a failed or dead attempt (a change batch,
a bundle job, an inventory date, a Pennsieve import) waits before the next one, and when to stop trying.

Attempts are counted by the product, not by Dagster: a relaunch Dagster could not make still counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the longest wait between two attempts, whatever `retryDelay` and the attempt count say.
MAX_RETRY_DELAY = 1800.0


@dataclass(frozen=True)
class RetryPolicy:
    """`retryDelay` doubling per failed attempt up to 30 min; at most `maxAttempts` attempts (0 = forever)."""

    retry_delay: float = 30.0
    max_attempts: int = 20

    @classmethod
    def of(cls, workflow: Any) -> RetryPolicy:
        """The policy of a workflow config (its `retryDelay` and `maxAttempts` keys)."""
        return cls(float(workflow.retryDelay), int(workflow.maxAttempts))

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the n-th failed attempt: none before the first, then retryDelay, 2x, 4x, ..."""
        if failed_attempts <= 0:
            return 0.0
        return min(MAX_RETRY_DELAY, self.retry_delay * 2 ** min(failed_attempts - 1, 32))

    def exhausted(self, failed_attempts: int) -> bool:
        """No attempt is left: `maxAttempts` attempts have failed (never, with maxAttempts 0)."""
        return self.max_attempts > 0 and failed_attempts >= self.max_attempts

    def next_attempt_at(self, failed_attempts: int, last_attempt_at: float | None) -> float:
        """When the next attempt may start (unix seconds); 0.0 when it may start now."""
        if failed_attempts <= 0 or last_attempt_at is None:
            return 0.0
        return last_attempt_at + self.delay(failed_attempts)

    def describe(self) -> str:
        limit = "no limit" if self.max_attempts == 0 else f"at most {self.max_attempts} attempts"
        return f"retryDelay {self.retry_delay:g}s doubling to {MAX_RETRY_DELAY:g}s, {limit}"
