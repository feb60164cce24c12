"""`type: sqlite-table`: the rows of a SQLite table as elements, for ingest_pipelines (both a source and a destination).

Table layout: `elements(id TEXT PRIMARY KEY, version TEXT, content_type TEXT, data BLOB)`; created when missing.
"""

from __future__ import annotations

import io
import sqlite3
from typing import Literal

from pydantic import Field

from ingest_pipelines.plugins import Download, Element, ElementNotFound, ElementPage, Plugin, PluginConfig


class SqliteTableConfig(PluginConfig):
    type: Literal["sqlite-table"] = "sqlite-table"
    #: the database file.
    path: str
    table: str = Field(default="elements", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    #: rows per enumeration page.
    pageSize: int = Field(default=100, ge=1)
    #: as a destination: delete rows whose element was deleted at the source.
    deletes: bool = False


class SqliteTable:
    """Source: rows in rowid order, a position is the last rowid seen. Destination: one row per key."""

    def __init__(self, config: SqliteTableConfig):
        self.config = config
        with self._connect() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {config.table} (id TEXT PRIMARY KEY, version TEXT, content_type TEXT, data BLOB)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.config.path, timeout=30)

    # -- source (connylabs: Nexter + Client)
    def list_elements(self, position: str | None) -> ElementPage:
        with self._connect() as db:
            rows = db.execute(
                f"SELECT rowid, id, version, content_type, length(data) FROM {self.config.table} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (int(position or 0), self.config.pageSize),
            ).fetchall()
        elements = [Element(id=row[1], version=row[2], content_type=row[3], size=row[4]) for row in rows]
        return ElementPage(elements, next=str(rows[-1][0]) if len(rows) == self.config.pageSize else None)

    def download(self, element: Element) -> Download:
        with self._connect() as db:
            row = db.execute(f"SELECT data, content_type, version FROM {self.config.table} WHERE id = ?", (element.id,)).fetchone()
        if row is None:
            raise ElementNotFound(f"{self.config.name}: no row {element.id!r}")
        # the version read: a row updated since it was listed is skipped now and synced by its next change
        return Download(io.BytesIO(row[0] or b""), content_type=row[1], size=len(row[0] or b""), version=row[2])

    def clean_up(self, element: Element) -> None:
        with self._connect() as db:  # deleting a row that is gone already is fine: idempotent
            db.execute(f"DELETE FROM {self.config.table} WHERE id = ?", (element.id,))

    def exists(self, element: Element) -> bool:
        with self._connect() as db:
            return db.execute(f"SELECT 1 FROM {self.config.table} WHERE id = ?", (element.id,)).fetchone() is not None

    # -- destination
    def holds(self, key: str, version: str) -> bool:
        with self._connect() as db:
            return db.execute(f"SELECT 1 FROM {self.config.table} WHERE id = ? AND version = ?", (key, version)).fetchone() is not None

    def store(self, key: str, element: Element, download: Download) -> None:
        data = download.stream.read()
        with self._connect() as db:
            db.execute(
                f"INSERT OR REPLACE INTO {self.config.table} (id, version, content_type, data) VALUES (?, ?, ?, ?)",
                (key, element.version, download.content_type, data),
            )

    def delete(self, key: str) -> None:
        with self._connect() as db:
            db.execute(f"DELETE FROM {self.config.table} WHERE id = ?", (key,))

    def uri(self, key: str) -> str:
        return f"sqlite://{self.config.path}?table={self.config.table}#{key}"


plugin = Plugin(config=SqliteTableConfig, source=SqliteTable, destination=SqliteTable, summary="rows of a SQLite table")
