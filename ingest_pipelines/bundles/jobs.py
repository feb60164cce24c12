"""The Pacifica job state store over SQLAlchemy (SQLite by default, PostgreSQL by URL).

One row per bundle: {job_id, state OK|FAILED, task, task_percent, complete, updated, created, exception} plus where
it came from and its attempts: `attempt` counts the runs requested for it, claimed by compare-and-set so that two
reconcilers (the drop sensor and the front door) never request the same attempt twice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from ingest_pipelines.bundles.format import TASK_INGEST_METADATA, TASK_UPLOADING

STATE_OK = "OK"
STATE_FAILED = "FAILED"
STATES = (STATE_OK, STATE_FAILED)

_metadata = sa.MetaData()
JOBS_TABLE = sa.Table(
    "bundle_jobs",
    _metadata,
    sa.Column("job_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow", sa.String(255), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("task_percent", sa.Float, nullable=False, default=0.0),
    sa.Column("complete", sa.Boolean, nullable=False, default=False),
    sa.Column("created", sa.DateTime, nullable=False),
    sa.Column("updated", sa.DateTime, nullable=False),
    sa.Column("exception", sa.Text, nullable=False, default=""),
    #: the object in the drop location (relative to the source prefix) and its ETag once known
    sa.Column("source_key", sa.String(1024), nullable=True),
    sa.Column("source_etag", sa.String(255), nullable=True),
    #: "sensor", "ingest" (POST /ingest) or "move" (POST /move)
    sa.Column("origin", sa.String(16), nullable=False, default="sensor"),
    sa.Column("run_id", sa.String(64), nullable=True),
    #: attempts requested so far (0: none yet); a run carries its attempt number and may only write while it is current
    sa.Column("attempt", sa.Integer, nullable=False, default=0, server_default="0"),
    #: when the current attempt was claimed
    sa.Column("attempt_at", sa.DateTime, nullable=True),
    #: set when the current attempt failed and another one is due at this time
    sa.Column("retry_at", sa.DateTime, nullable=True),
    sa.Index("ix_bundle_jobs_source", "workflow", "source_key"),
)
#: columns added after the first release: added to existing tables at startup
_ADDED_COLUMNS = {
    "attempt": "INTEGER NOT NULL DEFAULT 0",
    "attempt_at": "TIMESTAMP NULL",
    "retry_at": "TIMESTAMP NULL",
}


class StaleAttempt(RuntimeError):
    """This run's attempt is no longer the job's current one (a newer attempt was started, or the job was
    set FAILED): it must stop without writing anything more, and without removing what the job has."""


class JobNotFound(KeyError):
    """No job with this id (the front door answers 404)."""

    def __init__(self, job_id: int):
        super().__init__(job_id)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"job {self.job_id} not found"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class JobState:
    job_id: int
    workflow: str
    state: str
    task: str
    task_percent: float
    complete: bool
    created: datetime
    updated: datetime
    exception: str
    source_key: str | None
    source_etag: str | None
    origin: str
    run_id: str | None
    attempt: int = 0
    attempt_at: datetime | None = None
    retry_at: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        """The document Pacifica's GET /get_state answers (task_percent as a string, like Pacifica)."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "task": self.task,
            "task_percent": f"{self.task_percent:.1f}",
            "complete": self.complete,
            "updated": self.updated.strftime("%Y-%m-%d %H:%M:%S"),
            "created": self.created.strftime("%Y-%m-%d %H:%M:%S"),
            "exception": self.exception,
        }


class JobStore:
    """Job rows in one table; every method is one short transaction, safe from several threads/processes."""

    _engines: dict[str, sa.Engine] = {}
    _engines_lock = threading.Lock()

    def __init__(self, url: str):
        self.url = url
        self.engine = self._engine(url)

    @classmethod
    def _engine(cls, url: str) -> sa.Engine:
        with cls._engines_lock:
            engine = cls._engines.get(url)
            if engine is None:
                parsed = make_url(url)
                kwargs: dict[str, Any] = {}
                if parsed.get_backend_name() == "sqlite":
                    if parsed.database and parsed.database != ":memory:":
                        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                    # the front door, sensors and runs write from different processes: wait for the lock
                    kwargs["connect_args"] = {"timeout": 30}
                engine = sa.create_engine(url, **kwargs)
                if parsed.get_backend_name() == "sqlite":
                    sa.event.listen(engine, "connect", _sqlite_wal)
                _metadata.create_all(engine)
                _add_missing_columns(engine)
                cls._engines[url] = engine
            return engine

    def _row(self, row: Any) -> JobState:
        return JobState(**{column: getattr(row, column) for column in JobState.__dataclass_fields__})

    def create(
        self,
        workflow: str,
        source_key: str | None = None,
        source_etag: str | None = None,
        origin: str = "sensor",
        task: str = TASK_UPLOADING,
        run_id: str | None = None,
    ) -> JobState:
        now = _now()
        with self.engine.begin() as conn:
            result = conn.execute(
                JOBS_TABLE.insert().values(
                    workflow=workflow,
                    state=STATE_OK,
                    task=task,
                    task_percent=0.0,
                    complete=False,
                    created=now,
                    updated=now,
                    exception="",
                    source_key=source_key,
                    source_etag=source_etag,
                    origin=origin,
                    run_id=run_id,
                )
            )
            job_id = int(result.inserted_primary_key[0])
        return self.get(job_id)

    def get(self, job_id: int) -> JobState:
        if not 0 <= int(job_id) < 2**63:  # beyond any database integer: unknown, not an OverflowError
            raise JobNotFound(int(job_id))
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(JOBS_TABLE).where(JOBS_TABLE.c.job_id == int(job_id))).first()
        if row is None:
            raise JobNotFound(int(job_id))
        return self._row(row)

    def find(self, job_id: int) -> JobState | None:
        try:
            return self.get(job_id)
        except JobNotFound:
            return None

    def by_source(self, workflow: str, source_key: str) -> list[JobState]:
        """Jobs made for one drop object (any ETag), newest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(JOBS_TABLE)
                .where(JOBS_TABLE.c.workflow == workflow, JOBS_TABLE.c.source_key == source_key)
                .order_by(JOBS_TABLE.c.job_id.desc())
            ).all()
        return [self._row(row) for row in rows]

    def uploading(self, workflow: str) -> list[JobState]:
        """Jobs of a workflow still at UPLOADING (the front door is receiving them, or died doing so)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(JOBS_TABLE).where(
                    JOBS_TABLE.c.workflow == workflow, JOBS_TABLE.c.task == TASK_UPLOADING, JOBS_TABLE.c.complete.is_(False)
                )
            ).all()
        return [self._row(row) for row in rows]

    def unfinished(self, workflow: str) -> list[JobState]:
        """Jobs of a workflow that are not complete and not being received by the front door, oldest first:
        what reconciliation looks after."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(JOBS_TABLE)
                .where(JOBS_TABLE.c.workflow == workflow, JOBS_TABLE.c.complete.is_(False), JOBS_TABLE.c.task != TASK_UPLOADING)
                .order_by(JOBS_TABLE.c.job_id)
            ).all()
        return [self._row(row) for row in rows]

    def update(self, job_id: int, attempt: int | None = None, **fields: Any) -> JobState:
        """Set fields (state, task, task_percent, exception, source_key, source_etag, run_id); `complete`
        follows Pacifica: true when FAILED or when "ingest metadata" reached 100.

        With `attempt`, only while that attempt is the job's current one and the job is not FAILED (else StaleAttempt)."""
        current = self.get(job_id)
        values = {**{k: getattr(current, k) for k in ("state", "task", "task_percent", "exception")}, **fields}
        if values["state"] not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {values['state']!r}")
        values["task_percent"] = float(values["task_percent"])
        values["complete"] = values["state"] == STATE_FAILED or (values["task"] == TASK_INGEST_METADATA and values["task_percent"] >= 100.0)
        values["updated"] = _now()
        where = [JOBS_TABLE.c.job_id == int(job_id)]
        if attempt is not None:
            where += [JOBS_TABLE.c.attempt == attempt, JOBS_TABLE.c.state == STATE_OK]
        with self.engine.begin() as conn:
            changed = conn.execute(JOBS_TABLE.update().where(*where).values(**values)).rowcount
        if not changed:
            now = self.get(job_id)
            raise StaleAttempt(f"job {job_id} is at attempt {now.attempt} ({now.state}); attempt {attempt} stops here")
        return self.get(job_id)

    def fail(self, job_id: int, task: str, exception: str, attempt: int | None = None) -> JobState:
        return self.update(job_id, attempt=attempt, state=STATE_FAILED, task=task, exception=exception)

    # ------------------------------------------------------------------ attempts (compare-and-set)

    def _cas(self, job_id: int, attempt: int, values: dict[str, Any], *conditions: Any) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                JOBS_TABLE.update()
                .where(
                    JOBS_TABLE.c.job_id == int(job_id),
                    JOBS_TABLE.c.attempt == attempt,
                    JOBS_TABLE.c.complete.is_(False),
                    JOBS_TABLE.c.state == STATE_OK,
                    *conditions,
                )
                .values(updated=_now(), **values)
            )
        return bool(result.rowcount)

    def claim(self, job_id: int, attempt: int, exception: str | None = None, task: str | None = None) -> JobState | None:
        """Start attempt `attempt + 1` if the job is still at `attempt` (and not complete): the caller then requests
        exactly one run for it. None when another reconciler claimed it first or the job finished meanwhile."""
        values: dict[str, Any] = {"attempt": attempt + 1, "attempt_at": _now(), "retry_at": None, "run_id": None}
        if exception is not None:
            values["exception"] = exception
        if task is not None:
            values.update(task=task, task_percent=0.0)
        if not self._cas(job_id, attempt, values):
            return None
        return self.get(job_id)

    def attempt_failed(self, job_id: int, attempt: int, exception: str, retry_at: datetime) -> bool:
        """Record that `attempt` failed (once: the first reconciler to see it) and when the next one is due."""
        return self._cas(job_id, attempt, {"exception": exception, "retry_at": retry_at}, JOBS_TABLE.c.retry_at.is_(None))

    def give_up(self, job_id: int, attempt: int, exception: str) -> bool:
        """FAILED at the task reached, if the job is still at `attempt`: no attempt is left, or retrying cannot help."""
        return self._cas(job_id, attempt, {"state": STATE_FAILED, "complete": True, "exception": exception})

    def set_run(self, job_id: int, attempt: int, run_id: str) -> bool:
        """The run requested for `attempt` (the front door knows its id at once; the sensor's runs set it when they start)."""
        return self._cas(job_id, attempt, {"run_id": run_id})

    def retry(self, job_id: int, exception: str) -> JobState:
        """An administrator's retry of a job (FAILED or stuck): one more attempt, due now."""
        current = self.get(job_id)
        task = current.task if current.task != TASK_UPLOADING else "open tar"
        with self.engine.begin() as conn:
            conn.execute(
                JOBS_TABLE.update()
                .where(JOBS_TABLE.c.job_id == int(job_id))
                .values(state=STATE_OK, complete=False, task=task, exception=exception, retry_at=_now(), updated=_now())
            )
        return self.get(job_id)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Tables made by an earlier version lack the attempt columns: add them (SQLite and PostgreSQL both
    take ADD COLUMN with a default). Another process adding them at the same moment is fine."""
    for name, ddl in _ADDED_COLUMNS.items():
        if name in {column["name"] for column in sa.inspect(engine).get_columns(JOBS_TABLE.name)}:
            continue
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {JOBS_TABLE.name} ADD COLUMN {name} {ddl}"))
        except sa.exc.DBAPIError:
            if name not in {column["name"] for column in sa.inspect(engine).get_columns(JOBS_TABLE.name)}:
                raise


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


class JobProgress:
    """Reports one job's task and percent as bytes go by, writing at most every `interval` seconds.

    With `attempt`, every write checks that the attempt is still current (StaleAttempt otherwise)."""

    def __init__(self, store: JobStore | None, job_id: int, interval: float = 1.0, attempt: int | None = None):
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.attempt = attempt
        self.task = ""
        self.percent = 0.0
        self._written = 0.0

    def start(self, task: str) -> None:
        self.task, self.percent = task, 0.0
        self._write()

    def advance(self, done: int, total: int) -> None:
        self.percent = min(100.0, 100.0 * done / total) if total else 100.0
        if time.monotonic() - self._written >= self.interval:
            self._write()

    def finish(self, task: str | None = None) -> None:
        self.task = task or self.task
        self.percent = 100.0
        self._write()

    def _write(self) -> None:
        self._written = time.monotonic()
        if self.store is not None:
            self.store.update(self.job_id, attempt=self.attempt, task=self.task, task_percent=self.percent)
