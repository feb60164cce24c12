"""Pass marks for plugin sources, whose enumeration has no key order: which pass last saw each key of the key
index, so that the keys a complete pass did not see can be swept (deletes) in key order, a page at a time.

A table of its own in the ledger database (`sync_pass_seen`); marks are written before the tick commits, which is
safe: a mark from a tick that died only says the key existed, and a pass never deletes what it saw.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingest_pipelines.sync.ledger import IndexEntry, SyncLedger, _dec, _enc, _upsert, key_index

_metadata = sa.MetaData()

pass_seen = sa.Table(
    "sync_pass_seen",
    _metadata,
    sa.Column("workflow", sa.String(200), primary_key=True),
    sa.Column("key", sa.LargeBinary, primary_key=True),
    sa.Column("pass_number", sa.BigInteger, nullable=False),
)


@functools.lru_cache(maxsize=16)
def _ready(engine: Engine) -> Engine:
    _metadata.create_all(engine)
    return engine


def mark_seen(ledger: SyncLedger, workflow: str, pass_number: int, keys: Iterable[str]) -> None:
    """Record that pass `pass_number` saw these keys (one transaction)."""
    rows = [{"workflow": workflow, "key": _enc(key), "pass_number": pass_number} for key in keys]
    if not rows:
        return
    with _ready(ledger.engine).begin() as conn:
        for start in range(0, len(rows), 5000):
            _upsert(conn, pass_seen, rows[start : start + 5000], ["workflow", "key"])


def unseen(ledger: SyncLedger, workflow: str, pass_number: int, after: str, limit: int) -> tuple[list[IndexEntry], str, bool]:
    """Among the next `limit` index keys after `after` (key order), those pass `pass_number` did not see.
    Returns (entries, the last key looked at, whether more keys follow)."""
    join = key_index.outerjoin(pass_seen, sa.and_(pass_seen.c.workflow == key_index.c.workflow, pass_seen.c.key == key_index.c.key))
    query = sa.select(key_index, pass_seen.c.pass_number).select_from(join).where(key_index.c.workflow == workflow)
    if after:
        query = query.where(key_index.c.key > _enc(after))
    query = query.order_by(key_index.c.key).limit(limit)
    with _ready(ledger.engine).connect() as conn:
        rows = list(conn.execute(query))
    found = [SyncLedger._entry(row) for row in rows if row.pass_number is None or row.pass_number < pass_number]
    last = _dec(rows[-1].key) if rows else after
    return found, last, len(rows) == limit


def forget(ledger: SyncLedger, workflow: str, keys: Iterable[str]) -> None:
    """Drop the marks of keys that left the index."""
    dead = [_enc(key) for key in keys]
    if not dead:
        return
    with _ready(ledger.engine).begin() as conn:
        for start in range(0, len(dead), 500):
            conn.execute(pass_seen.delete().where(pass_seen.c.workflow == workflow, pass_seen.c.key.in_(dead[start : start + 500])))
