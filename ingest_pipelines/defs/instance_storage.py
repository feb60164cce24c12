"""An opt-in storage for the embedded instance: Dagster's SQLite storage where its default puts it (`history/`
and `schedules/` in $DAGSTER_HOME), opened under a lock (docs/configuration.md; not in the shipped dagster.yaml: `dagster dev` and `dg` without
DAGSTER_HOME read that file for a temporary instance, where this storage has no home to find).

Dagster's SQLite storage creates its tables and stamps their schema version when a process first opens a
new folder. Two processes doing that at once (the daemon, the webserver and `ingest-pipelines serve` started
together on a new DAGSTER_HOME) race: the loser dies on `table ... already exists`, or both stamp the
schema (`alembic_version has more than one head`) and the instance can no longer be opened by anyone. Here
every process opens the storage holding an exclusive file lock, so one creates it and the others find it made.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster._config import StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

try:
    import fcntl
except ImportError:  # Windows: no flock; Dagster's behaviour
    fcntl = None  # type: ignore[assignment]

#: the lock file, in DAGSTER_HOME
LOCK_NAME = ".sqlite-storage.lock"


class LockedSqliteStorage(DagsterSqliteStorage):
    """DagsterSqliteStorage based in `dagster_home` itself (as Dagster's default: `history/runs.db`,
    `schedules/schedules.db`, so an existing instance keeps its runs), opened under a lock.

    `dagster_home` comes from the environment (`{env: DAGSTER_HOME}` in dagster.yaml): every Dagster process
    finds its dagster.yaml through DAGSTER_HOME, so the storage is the one next to that file."""

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"dagster_home": StringSource}

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> LockedSqliteStorage:
        home = Path(config_value["dagster_home"])
        if not home.is_absolute():
            raise ValueError(f"storage: dagster_home must be an absolute path, got {str(home)!r}")
        return cls.from_local(base_dir=str(home), inst_data=inst_data)

    @classmethod
    def from_local(cls, base_dir: str, inst_data: ConfigurableClassData | None = None) -> LockedSqliteStorage:
        os.makedirs(base_dir, exist_ok=True)
        with storage_lock(Path(base_dir)):
            return cls(base_dir, inst_data=inst_data)


@contextlib.contextmanager
def storage_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder/.sqlite-storage.lock` (flock: released when this process dies, whatever kills it)."""
    if fcntl is None:
        yield
        return
    with (folder / LOCK_NAME).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_instance(home: Path) -> Any:
    """The instance of the DAGSTER_HOME folder `home`, opened from outside its processes (a harness, a test) as
    they open it: with DAGSTER_HOME set to `home` in this process, where the project's dagster.yaml finds its
    storage. The variable stays set: children this process starts open the same instance."""
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.from_config(str(home))
