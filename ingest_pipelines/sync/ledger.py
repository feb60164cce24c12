"""The sync ledger (SQLAlchemy): applied changes per destination, the key index and the sensor's scan state.

One transaction commits a tick (key index + cursor), so a crash leaves either the old or the new state.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingest_pipelines.config import FilesystemStoreConfig, IngestConfig

metadata = sa.MetaData()

# Keys are stored as UTF-8 bytes: byte order is S3's listing order on every database (a TEXT
# column would sort by the database's collation, and the key-range diff needs S3's order).
key_index = sa.Table(
    "sync_key_index",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("key", sa.LargeBinary, primary_key=True),
    sa.Column("etag", sa.String(200), nullable=False),
    sa.Column("version_id", sa.String(1024)),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("last_modified", sa.Float, nullable=False),
    # cleanUp deleted the source object on purpose: its disappearance is not a change.
    sa.Column("cleaned", sa.Boolean, nullable=False, default=False),
)

applied = sa.Table(
    "sync_applied",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("batch_id", sa.String(200), primary_key=True),
    sa.Column("key", sa.LargeBinary, primary_key=True),
    sa.Column("destination", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(1024), nullable=False),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("applied_at", sa.Float, nullable=False),
    sa.Index("ix_sync_applied_key", "workflow", "destination", "key"),
)

scan_state = sa.Table(
    "sync_scan_state",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("cursor", sa.Text, nullable=False),
    sa.Column("pending", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# The registry of committed batches (the documents live in the state store): a batch written by a
# tick that crashed before committing is not here, so a backfill never applies it.
batches = sa.Table(
    "sync_batches",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("batch_id", sa.String(200), primary_key=True),
    sa.Column("asset", sa.String(16), nullable=False),
    sa.Column("partition", sa.String(1024), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("changes", sa.Integer, nullable=False),
    sa.Column("oldest_change", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("applied_at", sa.Float),
    # reconciliation: attempts the runs made (counted when a run starts applying the batch), runs the
    # sensor requested while it was the first batch due (a run that never started counts too), the last error
    sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("requests", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("last_attempt_at", sa.Float),
    sa.Column("last_request_at", sa.Float),
    sa.Column("last_error", sa.Text),
    # the batch itself (JSON): committed with the registry row, so a committed batch is always readable
    sa.Column("document", sa.LargeBinary),
    sa.Index("ix_sync_batches_partition", "workflow", "asset", "partition"),
    sa.Index("ix_sync_batches_pending", "workflow", "applied_at", "seq"),
)

webhook_calls = sa.Table(
    "sync_webhook_calls",
    metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("batch_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
)


#: the registry columns of sync_batches (everything but the document)
_REGISTRY = [column for column in batches.columns if column.name != "document"]


class LedgerError(RuntimeError):
    """The ledger database cannot be opened or written; the message names the URL (without password)."""


@dataclass(frozen=True)
class IndexEntry:
    """What the key index remembers of one source object."""

    key: str
    etag: str
    size: int
    last_modified: float
    version_id: str | None = None
    cleaned: bool = False


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    asset: str
    partition: str
    seq: int
    changes: int
    oldest_change: float
    created_at: float
    #: the batch as JSON (None in rows read back without it)
    document: bytes | None = None


@dataclass(frozen=True)
class PendingBatch:
    """A committed batch not applied yet, with what reconciliation knows of its attempts."""

    batch_id: str
    asset: str
    partition: str
    seq: int
    changes: int
    oldest_change: float
    created_at: float
    attempts: int
    requests: int
    last_attempt_at: float | None
    last_request_at: float | None
    last_error: str | None

    @property
    def tries(self) -> int:
        """Tries so far, as the sensor counts them once no run is in progress: runs that started the
        batch, or runs requested for it that never started it."""
        return max(self.attempts, self.requests)

    @property
    def last_try_at(self) -> float | None:
        return max((t for t in (self.last_attempt_at, self.last_request_at) if t is not None), default=None)


@dataclass(frozen=True)
class AppliedRow:
    batch_id: str
    key: str
    destination: str
    version: str
    operation: str
    seq: int


def default_ledger_url(config: IngestConfig) -> str:
    """SQLite beside the state folder; with an S3 state store, in $DAGSTER_HOME (else the config's folder)."""
    state = config.state_store()
    if isinstance(state, FilesystemStoreConfig):
        folder = Path(state.path).resolve()
    elif os.environ.get("DAGSTER_HOME"):
        folder = Path(os.environ["DAGSTER_HOME"]).resolve()
    else:
        folder = Path(config.path).resolve().parent if config.path else Path.cwd()
    return f"sqlite:///{folder / 'sync-ledger.sqlite'}"


def _enc(key: str) -> bytes:
    return key.encode("utf-8")


def _dec(key: bytes) -> str:
    return bytes(key).decode("utf-8")


@functools.lru_cache(maxsize=8)
def _engine(url: str, pid: int) -> Engine:
    # pid in the cache key: a forked process must not reuse its parent's connections
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 60}
    engine = sa.create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers (the sensor) never block the writer (a run); NORMAL survives a killed process
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def _add_missing_columns(engine: Engine) -> None:
    """Bring a ledger made by an earlier version up to date: add the columns its tables lack (every column
    added since the first release is nullable or has a server default)."""
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing = [column for column in table.columns if column.name not in present]
        if not missing:
            continue
        with engine.begin() as conn:
            for column in missing:
                ddl = column.type.compile(dialect=engine.dialect)
                if column.server_default is not None:
                    ddl += f" NOT NULL DEFAULT {column.server_default.arg}"
                try:
                    conn.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {ddl}"))
                except (sa.exc.OperationalError, sa.exc.ProgrammingError):
                    pass  # another process added it first


def _upsert(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # portable fallback: delete then insert, in the caller's transaction
        for row in rows:
            conn.execute(table.delete().where(sa.and_(*(table.c[k] == row[k] for k in keys))))
        conn.execute(table.insert(), rows)
        return
    stmt = insert(table)
    updates = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates), rows)


class SyncLedger:
    """All sync bookkeeping for every workflow in one database (default SQLite, any SQLAlchemy URL)."""

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = _engine(url, os.getpid())
        except sa.exc.SQLAlchemyError as exc:
            raise LedgerError(f"sync ledger {sa.engine.make_url(url).render_as_string(hide_password=True)}: {exc}") from exc

    # ------------------------------------------------------------------ scan state

    def load_scan(self, workflow: str) -> tuple[str | None, list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(scan_state.c.cursor, scan_state.c.pending).where(scan_state.c.workflow == workflow)).first()
        if row is None:
            return None, []
        return row.cursor, orjson.loads(row.pending)

    def commit_tick(
        self,
        workflow: str,
        cursor: str,
        pending: list[dict[str, Any]],
        upserts: Iterable[IndexEntry] = (),
        deletes: Iterable[str] = (),
        new_batches: Iterable[BatchRow] = (),
    ) -> None:
        """Key index changes, the tick's batches and the new cursor in one transaction."""
        rows = [
            {
                "workflow": workflow,
                "key": _enc(e.key),
                "etag": e.etag,
                "version_id": e.version_id,
                "size": e.size,
                "last_modified": e.last_modified,
                "cleaned": e.cleaned,
            }
            for e in upserts
        ]
        dead = [_enc(k) for k in deletes]
        with self.engine.begin() as conn:
            for start in range(0, len(dead), 500):
                chunk = dead[start : start + 500]
                conn.execute(key_index.delete().where(key_index.c.workflow == workflow, key_index.c.key.in_(chunk)))
            for start in range(0, len(rows), 5000):
                _upsert(conn, key_index, rows[start : start + 5000], ["workflow", "key"])
            batch_rows = [{"workflow": workflow, **b.__dict__, "applied_at": None} for b in new_batches]
            _upsert(conn, batches, batch_rows, ["workflow", "batch_id"])
            _upsert(
                conn,
                scan_state,
                [{"workflow": workflow, "cursor": cursor, "pending": orjson.dumps(pending).decode(), "updated_at": time.time()}],
                ["workflow"],
            )

    # ------------------------------------------------------------------ key index

    def index_range(self, workflow: str, after: str | None, upto: str | None) -> dict[str, IndexEntry]:
        """Index entries with after < key <= upto (None: unbounded), in S3's byte order."""
        query = sa.select(key_index).where(key_index.c.workflow == workflow)
        if after:
            query = query.where(key_index.c.key > _enc(after))
        if upto is not None:
            query = query.where(key_index.c.key <= _enc(upto))
        with self.engine.connect() as conn:
            return {entry.key: entry for entry in map(self._entry, conn.execute(query.order_by(key_index.c.key)))}

    def index_get(self, workflow: str, keys: Iterable[str]) -> dict[str, IndexEntry]:
        wanted = [_enc(k) for k in keys]
        found: dict[str, IndexEntry] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(key_index).where(key_index.c.workflow == workflow, key_index.c.key.in_(wanted[start : start + 500]))
                for row in conn.execute(query):
                    entry = self._entry(row)
                    found[entry.key] = entry
        return found

    def index_count(self, workflow: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(key_index).where(key_index.c.workflow == workflow)).scalar_one()

    def mark_cleaned(self, workflow: str, items: Iterable[tuple[str, str]]) -> None:
        """cleanUp deleted these (key, etag) from the source: their absence is not a delete."""
        with self.engine.begin() as conn:
            for key, etag in items:
                conn.execute(
                    key_index.update()
                    .where(key_index.c.workflow == workflow, key_index.c.key == _enc(key), key_index.c.etag == etag)
                    .values(cleaned=True)
                )

    @staticmethod
    def _entry(row: Any) -> IndexEntry:
        return IndexEntry(
            key=_dec(row.key),
            etag=row.etag,
            size=row.size,
            last_modified=row.last_modified,
            version_id=row.version_id,
            cleaned=bool(row.cleaned),
        )

    # ------------------------------------------------------------------ applied changes

    def applied_in_batch(self, workflow: str, batch_id: str) -> set[tuple[str, str]]:
        """(key, destination) pairs of this batch already applied."""
        query = sa.select(applied.c.key, applied.c.destination).where(applied.c.workflow == workflow, applied.c.batch_id == batch_id)
        with self.engine.connect() as conn:
            return {(_dec(r.key), r.destination) for r in conn.execute(query)}

    def applied_in_batches(self, workflow: str, batch_ids: Iterable[str]) -> dict[str, set[tuple[str, str]]]:
        """(key, destination) pairs already applied, per batch (every id in the answer)."""
        ids = list(batch_ids)
        out: dict[str, set[tuple[str, str]]] = {batch_id: set() for batch_id in ids}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(applied.c.batch_id, applied.c.key, applied.c.destination).where(
                    applied.c.workflow == workflow, applied.c.batch_id.in_(ids[start : start + 500])
                )
                for r in conn.execute(query):
                    out[r.batch_id].add((_dec(r.key), r.destination))
        return out

    def latest_seq(self, workflow: str, destination: str, keys: Iterable[str]) -> dict[str, int]:
        """The highest batch sequence applied per key to a destination (for "superseded" checks)."""
        wanted = [_enc(k) for k in keys]
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = (
                    sa.select(applied.c.key, sa.func.max(applied.c.seq))
                    .where(
                        applied.c.workflow == workflow, applied.c.destination == destination, applied.c.key.in_(wanted[start : start + 500])
                    )
                    .group_by(applied.c.key)
                )
                for key, seq in conn.execute(query):
                    out[_dec(key)] = int(seq)
        return out

    def applied_versions(self, workflow: str, destination: str, keys: Iterable[str]) -> set[tuple[str, str]]:
        """(key, version) pairs ever applied to a destination (any batch)."""
        wanted = [_enc(k) for k in keys]
        out: set[tuple[str, str]] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(wanted), 500):
                query = sa.select(applied.c.key, applied.c.version).where(
                    applied.c.workflow == workflow, applied.c.destination == destination, applied.c.key.in_(wanted[start : start + 500])
                )
                out.update((_dec(r.key), r.version) for r in conn.execute(query))
        return out

    def record_applied(self, workflow: str, rows: Iterable[AppliedRow]) -> int:
        now = time.time()
        values = [
            {
                "workflow": workflow,
                "batch_id": r.batch_id,
                "key": _enc(r.key),
                "destination": r.destination,
                "version": r.version,
                "operation": r.operation,
                "seq": r.seq,
                "applied_at": now,
            }
            for r in rows
        ]
        with self.engine.begin() as conn:
            for start in range(0, len(values), 5000):
                _upsert(conn, applied, values[start : start + 5000], ["workflow", "batch_id", "key", "destination"])
        return len(values)

    def applied_rows(self, workflow: str) -> Iterator[AppliedRow]:
        query = sa.select(applied).where(applied.c.workflow == workflow).order_by(applied.c.seq, applied.c.key)
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                yield AppliedRow(r.batch_id, _dec(r.key), r.destination, r.version, r.operation, r.seq)

    # ------------------------------------------------------------------ batches

    def committed_batches(self, workflow: str, asset: str, partition: str) -> list[BatchRow]:
        query = (
            sa.select(*_REGISTRY)
            .where(batches.c.workflow == workflow, batches.c.asset == asset, batches.c.partition == partition)
            .order_by(batches.c.seq)
        )
        with self.engine.connect() as conn:
            return [self._batch(r) for r in conn.execute(query)]

    def batch_documents(self, workflow: str, batch_ids: Iterable[str]) -> dict[str, bytes]:
        """The documents of committed batches by id (batches committed before documents lived here are absent)."""
        ids = list(batch_ids)
        out: dict[str, bytes] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                query = sa.select(batches.c.batch_id, batches.c.document).where(
                    batches.c.workflow == workflow, batches.c.batch_id.in_(ids[start : start + 500]), batches.c.document.is_not(None)
                )
                out.update((r.batch_id, bytes(r.document)) for r in conn.execute(query))
        return out

    def committed_partitions(self, workflow: str, asset: str) -> list[str]:
        """Every partition (shard or hour) that has a committed batch, sorted."""
        query = sa.select(batches.c.partition).where(batches.c.workflow == workflow, batches.c.asset == asset).distinct()
        with self.engine.connect() as conn:
            return sorted(r.partition for r in conn.execute(query))

    def is_committed(self, workflow: str, batch_id: str) -> bool:
        query = sa.select(batches.c.seq).where(batches.c.workflow == workflow, batches.c.batch_id == batch_id)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def mark_batch_applied(self, workflow: str, batch_id: str) -> None:
        self.mark_batches_applied(workflow, [batch_id])

    def mark_batches_applied(self, workflow: str, batch_ids: Iterable[str]) -> None:
        self._update_batches(workflow, batch_ids, applied_at=time.time(), last_error=None)

    def _update_batches(self, workflow: str, batch_ids: Iterable[str], **values: Any) -> None:
        """Set `values` on these batches, in one transaction (500 ids per statement)."""
        ids = list(batch_ids)
        with self.engine.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(
                    batches.update()
                    .where(batches.c.workflow == workflow, batches.c.batch_id.in_(ids[start : start + 500]))
                    .values(**values)
                )

    def pending_batches(self, workflow: str, limit: int | None = None, asset: str | None = None) -> list[PendingBatch]:
        """Committed batches not applied yet, in commit order."""
        query = sa.select(*_REGISTRY).where(batches.c.workflow == workflow, batches.c.applied_at.is_(None))
        if asset is not None:
            query = query.where(batches.c.asset == asset)
        query = query.order_by(batches.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [self._pending(r) for r in conn.execute(query)]

    def start_attempts(self, workflow: str, batch_ids: Iterable[str]) -> None:
        """A run starts applying these batches: one more attempt each (durable before any write)."""
        self._update_batches(workflow, batch_ids, attempts=batches.c.attempts + 1, last_attempt_at=time.time())

    def record_requests(self, workflow: str, batch_ids: Iterable[str]) -> None:
        """The sensor requested a run for these due batches: a run that never starts counts as a failed try."""
        self._update_batches(workflow, batch_ids, requests=batches.c.requests + 1, last_request_at=time.time())

    def record_failures(self, workflow: str, errors: dict[str, str]) -> None:
        """The last error of each batch whose attempt failed (shown by the sensor and the check)."""
        with self.engine.begin() as conn:
            for batch_id, error in errors.items():
                conn.execute(
                    batches.update().where(batches.c.workflow == workflow, batches.c.batch_id == batch_id).values(last_error=error[:4000])
                )

    def reset_attempts(self, workflow: str, batch_ids: Iterable[str] | None = None) -> int:
        """Forget the attempts of unapplied batches (all, or these), so reconciliation tries them again now."""
        query = batches.update().where(batches.c.workflow == workflow, batches.c.applied_at.is_(None))
        if batch_ids is not None:
            query = query.where(batches.c.batch_id.in_(list(batch_ids)))
        with self.engine.begin() as conn:
            return conn.execute(query.values(attempts=0, requests=0, last_attempt_at=None, last_request_at=None)).rowcount

    @staticmethod
    def _pending(r: Any) -> PendingBatch:
        return PendingBatch(
            r.batch_id,
            r.asset,
            r.partition,
            r.seq,
            r.changes,
            r.oldest_change,
            r.created_at,
            int(r.attempts or 0),
            int(r.requests or 0),
            r.last_attempt_at,
            r.last_request_at,
            r.last_error,
        )

    def oldest_unapplied(self, workflow: str) -> float | None:
        """The change time of the oldest change not applied yet (for the lag)."""
        query = sa.select(sa.func.min(batches.c.oldest_change)).where(batches.c.workflow == workflow, batches.c.applied_at.is_(None))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    @staticmethod
    def _batch(r: Any) -> BatchRow:
        return BatchRow(r.batch_id, r.asset, r.partition, r.seq, r.changes, r.oldest_change, r.created_at)

    # ------------------------------------------------------------------ webhook

    def webhook_sent(self, workflow: str, batch_id: str) -> bool:
        query = sa.select(webhook_calls.c.status).where(webhook_calls.c.workflow == workflow, webhook_calls.c.batch_id == batch_id)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def record_webhook(self, workflow: str, batch_id: str, status: int) -> None:
        with self.engine.begin() as conn:
            _upsert(
                conn,
                webhook_calls,
                [{"workflow": workflow, "batch_id": batch_id, "status": status, "sent_at": time.time()}],
                ["workflow", "batch_id"],
            )
