"""The import history: one row per indexing outcome (SQLite by default, any SQLAlchemy URL).

"Never index an object version twice" is decided here: a version is its VersionId, else its ETag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ingest_pipelines.config import FilesystemStoreConfig, IngestConfig

INDEXED = "indexed"
FAILED = "failed"

metadata = sa.MetaData()

import_history = sa.Table(
    "inventory_import_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("workflow", sa.String(255), nullable=False),
    sa.Column("bucket", sa.String(255), nullable=False),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("version_id", sa.String(1024), nullable=True),
    sa.Column("etag", sa.String(255), nullable=True),
    sa.Column("user_id", sa.String(255), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("response", sa.Text, nullable=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_inventory_import_history_object", "workflow", "bucket", "key"),
)


def default_history_url(config: IngestConfig, workflow: str) -> str:
    """SQLite in the state folder; with an S3 state store, in `.ingest-state` beside ingest.yaml."""
    state = config.state_store()
    if isinstance(state, FilesystemStoreConfig):
        base = Path(state.path)
    else:
        base = (Path(config.path).resolve().parent if config.path else Path.cwd()) / ".ingest-state"
    folder = base / workflow
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'inventory-history.sqlite'}"


class ImportHistory:
    """Rows of one workflow; safe to use from the run's worker threads."""

    def __init__(self, url: str, workflow: str):
        self.workflow = workflow
        connect_args: dict[str, Any] = {"timeout": 30} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def is_indexed(self, bucket: str, key: str, version_id: str | None, etag: str | None) -> bool:
        table = import_history.c
        query = sa.select(table.id).where(
            table.workflow == self.workflow, table.bucket == bucket, table.key == key, table.status == INDEXED
        )
        query = query.where(table.version_id == version_id) if version_id else query.where(table.etag == etag)
        with self.engine.connect() as connection:
            return connection.execute(query.limit(1)).first() is not None

    def record(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        etag: str | None,
        user_id: str | None,
        status: str,
        attempts: int,
        response: str,
    ) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                import_history.insert().values(
                    workflow=self.workflow,
                    bucket=bucket,
                    key=key,
                    version_id=version_id,
                    etag=etag,
                    user_id=user_id,
                    status=status,
                    attempts=attempts,
                    response=response,
                    time=datetime.now(UTC),
                )
            )

    def rows(self, key: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(import_history).where(import_history.c.workflow == self.workflow).order_by(import_history.c.id)
        if key is not None:
            query = query.where(import_history.c.key == key)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]
