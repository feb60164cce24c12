"""What a sensor requested and whether it got done: each request is followed in the sensor's cursor until
a run of it succeeds, and requested again (new run key, backoff, bounded attempts) when its run died.

Used by the inventory sensor (one request per report) and the Pennsieve folders sensor (one per import).
Dagster's own run retries are off for these runs (`dagster/max_retries: 0`): attempts are counted here once,
and a relaunch Dagster could not make (code server down) is not lost, since no run of it means no success.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from ingest_pipelines.defs.runs import NO_DAGSTER_RETRIES, failure_message
from ingest_pipelines.retries import RetryPolicy

#: run tag: which attempt of a request a run is (1 = the first request).
ATTEMPT_TAG = "ingest/attempt"
#: requests followed at once; past it the oldest that gave up are dropped first (their failing check stays).
MAX_TRACKED = 500
#: requests whose runs are looked up in one tick (the rest next tick), and the time that may take.
MAX_LOOKUPS_PER_TICK = 100
LOOKUP_SECONDS = 10.0
#: runs of one partition looked at per lookup (newest first, created since the first request).
RUNS_PER_LOOKUP = 50
#: the daemon creates a request's run after the tick that returned it; run times are compared with
#: the tick's clock with this much slack.
CLOCK_SLACK_SECONDS = 5.0
#: statuses in which a run may still do (or be about to do) the work.
IN_FLIGHT = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
ENDED_WITHOUT_SUCCESS = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def clock() -> float:
    """Seconds since the epoch: the time the tick runs at (tests replace it to step through backoffs)."""
    return time.time()


@dataclass
class TrackedRequest:
    """One request of a sensor (a report, an import) from its first run until one of its runs succeeds."""

    #: what was requested: the report's manifest key, the import's folder
    id: str
    partition: str
    #: the first attempt's run key; attempt n runs with `{run_key}:attempt-{n}`
    run_key: str
    tags: dict[str, str]
    first_requested_at: float
    requested_at: float
    #: runs requested so far (the current one included)
    attempts: int = 1
    #: the tick that found the current attempt ended without success (None: not yet)
    failed_at: float | None = None
    reason: str = ""
    last_run_id: str = ""
    #: no attempt left: not requested again until a run of it succeeds (a re-run by a user)
    gave_up: bool = False
    #: its failing check was emitted
    reported: bool = False
    #: the tick that last looked up its runs (the least recently looked up go first)
    looked_at: float = 0.0

    def run_request(self) -> dg.RunRequest:
        key = self.run_key if self.attempts == 1 else f"{self.run_key}:attempt-{self.attempts}"
        tags = {**self.tags, ATTEMPT_TAG: str(self.attempts), **NO_DAGSTER_RETRIES}
        return dg.RunRequest(run_key=key, partition_key=self.partition, tags=tags)

    def to_json(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value not in (None, "", False)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrackedRequest:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass
class ReconcileResult:
    """What one tick decided: requests to make again, requests done, and the ones that gave up."""

    retries: list[TrackedRequest] = field(default_factory=list)
    succeeded: list[TrackedRequest] = field(default_factory=list)
    #: gave up this tick (their failing check is emitted now)
    gave_up: list[TrackedRequest] = field(default_factory=list)
    #: every request that has given up and is still followed
    stuck: list[TrackedRequest] = field(default_factory=list)
    in_flight: int = 0
    waiting: list[TrackedRequest] = field(default_factory=list)
    dropped: list[TrackedRequest] = field(default_factory=list)
    looked_up: int = 0


class SensorRequests:
    """The requests a sensor follows, kept in its cursor (bounded: MAX_TRACKED)."""

    def __init__(self, entries: Iterable[TrackedRequest], policy: RetryPolicy, launch_timeout: float):
        self.entries = {entry.id: entry for entry in entries}
        self.policy = policy
        self.launch_timeout = launch_timeout

    @classmethod
    def from_cursor(cls, data: Iterable[Mapping[str, Any]] | None, policy: RetryPolicy, launch_timeout: float) -> SensorRequests:
        return cls((TrackedRequest.from_json(item) for item in data or ()), policy, launch_timeout)

    def to_cursor(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in sorted(self.entries.values(), key=lambda e: (e.first_requested_at, e.id))]

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def track(self, request_id: str, partition: str, run_key: str, tags: Mapping[str, str], now: float) -> dg.RunRequest:
        """Follow a new request; returns its first run request (attempt 1, Dagster retries off). One
        followed already keeps its attempts (its current run key again: the daemon skips a duplicate)."""
        if request_id in self.entries:
            return self.entries[request_id].run_request()
        entry = TrackedRequest(request_id, partition, run_key, dict(tags), first_requested_at=now, requested_at=now)
        self.entries[request_id] = entry
        return entry.run_request()

    def reconcile(
        self,
        instance: dg.DagsterInstance,
        matches: Callable[[dg.DagsterRun, TrackedRequest], bool],
        now: float,
        deadline: float | None = None,
    ) -> ReconcileResult:
        """Look up the runs of the followed requests and decide, per request: done (a run succeeded), in
        flight (a run is queued or running), failed (its current attempt's run ended FAILURE/CANCELED, or
        never appeared within launchTimeout) -> requested again once the backoff has passed, or given up
        after maxAttempts. `matches(run, request)`: whether a run of the request's partition is one of it."""
        result = ReconcileResult()
        deadline = deadline if deadline is not None else time.monotonic() + LOOKUP_SECONDS
        # least recently looked up first: with more requests than a tick may look up, each gets its turn
        order = sorted(self.entries.values(), key=lambda e: (e.looked_at, e.requested_at, e.id))
        for entry in order:
            if entry.failed_at is not None and not entry.gave_up and now < self._retry_at(entry):
                result.waiting.append(entry)  # its backoff has not passed: nothing to look up
                continue
            if result.looked_up >= MAX_LOOKUPS_PER_TICK or time.monotonic() > deadline:
                if entry.gave_up:
                    result.stuck.append(entry)
                continue
            result.looked_up += 1
            entry.looked_at = now
            state = self._observe(instance, entry, matches, now)
            if state == "succeeded":
                del self.entries[entry.id]
                result.succeeded.append(entry)
            elif state == "in_flight":
                result.in_flight += 1
            elif entry.gave_up:
                result.stuck.append(entry)
            elif self.policy.exhausted(entry.attempts):
                entry.gave_up = True
                result.gave_up.append(entry)
                result.stuck.append(entry)
            elif now >= self._retry_at(entry):
                entry.attempts += 1
                entry.requested_at = now
                entry.failed_at = None
                result.retries.append(entry)
            else:
                result.waiting.append(entry)
        result.dropped = self._bound()
        return result

    def _retry_at(self, entry: TrackedRequest) -> float:
        return self.policy.next_attempt_at(entry.attempts, entry.failed_at)

    def _observe(
        self, instance: dg.DagsterInstance, entry: TrackedRequest, matches: Callable[[dg.DagsterRun, TrackedRequest], bool], now: float
    ) -> str:
        """succeeded | in_flight | failed (also recorded on the entry: when, why, which run)."""
        since = datetime.fromtimestamp(entry.first_requested_at - CLOCK_SLACK_SECONDS, tz=UTC)
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags={"dagster/partition": entry.partition}, created_after=since), limit=RUNS_PER_LOOKUP
        )
        current = None
        for record in records:  # newest first
            run = record.dagster_run
            if not matches(run, entry):
                continue
            if run.status == dg.DagsterRunStatus.SUCCESS:
                return "succeeded"
            if run.status in IN_FLIGHT and not self._never_launched(record, now):
                return "in_flight"
            if current is None and run.tags.get(ATTEMPT_TAG) == str(entry.attempts):
                current = record
        if entry.failed_at is not None:
            return "failed"
        if current is not None:
            run = current.dagster_run
            entry.last_run_id = run.run_id
            # the backoff counts from the tick that saw the failure (the run's own end may be older
            # when the sensor was stopped: then the next attempt comes one backoff after it is on again)
            entry.failed_at = now
            if run.status in ENDED_WITHOUT_SUCCESS:
                entry.reason = f"run {run.run_id} ended {run.status.value}: {failure_message(instance, run.run_id)[:300]}"
            else:
                entry.reason = f"run {run.run_id} was created but not queued within launchTimeout ({self.launch_timeout:g}s)"
            return "failed"
        if now - entry.requested_at > self.launch_timeout:
            entry.failed_at = now
            entry.reason = f"no run of attempt {entry.attempts} appeared within launchTimeout ({self.launch_timeout:g}s)"
            return "failed"
        return "in_flight"  # requested this tick or lately: its run is being created

    def _never_launched(self, record: dg.RunRecord, now: float) -> bool:
        """A run created but never handed to the queue (the daemon died in between) stays NOT_STARTED."""
        return (
            record.dagster_run.status == dg.DagsterRunStatus.NOT_STARTED and now - record.create_timestamp.timestamp() > self.launch_timeout
        )

    def _bound(self) -> list[TrackedRequest]:
        """Keep at most MAX_TRACKED: drop those that gave up first (their failing check stays), oldest first."""
        if len(self.entries) <= MAX_TRACKED:
            return []
        order = sorted(self.entries.values(), key=lambda e: (not e.gave_up, e.first_requested_at))
        dropped = order[: len(self.entries) - MAX_TRACKED]
        for entry in dropped:
            del self.entries[entry.id]
        return dropped


def describe(result: ReconcileResult, policy: RetryPolicy, rerun: str) -> tuple[list[str], str]:
    """Log lines at ERROR for the requests that gave up (each tick they are followed), and a one-line summary
    for the tick's skip reason. `rerun`: how a user re-runs one (e.g. "backfill the date")."""
    errors = [
        f"{entry.id} (partition {entry.partition}): gave up after {entry.attempts} attempt(s) ({policy.describe()}); "
        f"last: {entry.reason or 'unknown'}; to retry: {rerun}"
        for entry in result.stuck[:20]
    ]
    if len(result.stuck) > 20:
        errors.append(f"... and {len(result.stuck) - 20} more requests that gave up")
    parts = []
    if result.in_flight:
        parts.append(f"{result.in_flight} in progress")
    if result.waiting:
        soonest = min(policy.next_attempt_at(e.attempts, e.failed_at) for e in result.waiting)
        when = datetime.fromtimestamp(soonest, tz=UTC).isoformat(timespec="seconds")
        parts.append(f"{len(result.waiting)} waiting to retry (next at {when})")
    if result.stuck:
        names = ", ".join(entry.id for entry in result.stuck[:3]) + (" ..." if len(result.stuck) > 3 else "")
        parts.append(f"{len(result.stuck)} GAVE UP after their last attempt ({names}; {rerun})")
    return errors, "; ".join(parts)


def gave_up_check(
    asset_key: dg.AssetKey, check_name: str, entry: TrackedRequest, policy: RetryPolicy, rerun: str
) -> dg.AssetCheckEvaluation:
    """The failing check a user sees on the partition when its request gave up."""
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.ERROR,
        partition=entry.partition,
        metadata={
            "reason": dg.MetadataValue.text(f"gave up after {entry.attempts} attempt(s): {entry.reason or 'unknown'}"),
            "request": dg.MetadataValue.text(entry.id),
            "attempts": entry.attempts,
            "last_run_id": dg.MetadataValue.text(entry.last_run_id),
            "retry_policy": dg.MetadataValue.text(policy.describe()),
            "to_retry": dg.MetadataValue.text(rerun),
        },
    )


@dataclass
class Settled:
    """A tick's reconciliation as the sensor returns it."""

    run_requests: list[dg.RunRequest]
    #: failing checks of the requests that gave up this tick
    checks: list[dg.AssetCheckEvaluation]
    #: for the tick's skip reason
    summary: str


def reconcile_requests(
    context: dg.SensorEvaluationContext,
    requests: SensorRequests,
    matches: Callable[[dg.DagsterRun, TrackedRequest], bool],
    now: float,
    asset_key: dg.AssetKey,
    check_name: str,
    rerun: str,
) -> Settled:
    """Reconcile a sensor's followed requests and say so where the user looks: the tick's log (ERROR for
    every request that gave up, each tick until a run of it succeeds), the skip reason, a failing check."""
    result = requests.reconcile(context.instance, matches, now)
    for entry in result.succeeded:
        if entry.attempts > 1 or entry.gave_up:
            context.log.info(f"{entry.id}: done after {entry.attempts} attempt(s)")
    for entry in result.retries:
        context.log.warning(
            f"{entry.id}: requesting attempt {entry.attempts} of partition {entry.partition} "
            f"({requests.policy.describe()}); previous: {entry.reason or 'unknown'}"
        )
    checks = []
    for entry in result.stuck:
        if not entry.reported:
            checks.append(gave_up_check(asset_key, check_name, entry, requests.policy, rerun))
            entry.reported = True
    errors, summary = describe(result, requests.policy, rerun)
    for line in errors:
        context.log.error(line)
    for entry in result.dropped:
        context.log.error(
            f"{entry.id}: no longer followed (more than {MAX_TRACKED} requests); its partition {entry.partition} stays failed; {rerun}"
        )
    return Settled([entry.run_request() for entry in result.retries], checks, summary)
