"""The embedded instance: `IngestInstance` (dagster.yaml's `instance_class`), a DagsterInstance whose default
storage is Dagster's SQLite storage in its usual place, opened under a file lock.

Dagster's SQLite storage creates its tables and stamps their schema version when a process first opens a
new DAGSTER_HOME. Two processes doing that at once (the daemon, the webserver and `ingest-pipelines serve`
started together) race: the loser dies on `table ... already exists`, or both stamp the schema
(`alembic_version has more than one head`) and the instance can no longer be opened by anyone. Here every
process opens the storage holding an exclusive file lock, so one creates it and the others find it made.

The storage is the instance class's default, not a `storage:` block, because only the defaults learn the
instance's folder: DAGSTER_HOME, or the temporary folder `dagster dev` and `dg` make when DAGSTER_HOME is
unset (they read ./dagster.yaml then). An explicit `storage:` in dagster.yaml (PostgreSQL) still wins.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInstance
from dagster._config import StringSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.instance.config import ConcurrencyConfig
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData

from ingest_pipelines.defs.run_coordinator import DEQUEUE_THREAD

try:
    import fcntl
except ImportError:  # Windows: no flock; Dagster's behaviour
    fcntl = None  # type: ignore[assignment]

#: the lock file, in the instance's folder
LOCK_NAME = ".sqlite-storage.lock"


class IngestInstance(DagsterInstance):
    """DagsterInstance whose default storage is LockedSqliteStorage in the instance's folder. In the daemon, it
    gets the run launcher's warm run worker ready as the daemon starts (`LocalRunLauncher.prestart`), and lets
    the dequeuing thread wait for a run submitted in the daemon (`IngestRunCoordinator.wait_for_submission`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if is_daemon_process():
            prestart = getattr(self.run_launcher, "prestart", None)
            if prestart is not None:
                prestart()

    def get_concurrency_config(self) -> ConcurrencyConfig:
        # the first thing the dequeuing daemon's iteration asks (`QueuedRunCoordinatorDaemon.run_iteration`),
        # before it reads the queue: where the run coordinator can, wait there for a run submitted in this process
        if threading.current_thread().name == DEQUEUE_THREAD and sys._getframe(1).f_code.co_name == "run_iteration":
            wait = getattr(self.run_coordinator, "wait_for_submission", None)
            if wait is not None:
                wait()
        return super().get_concurrency_config()

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def config_defaults(cls, base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, LockedSqliteStorage.__name__, yaml.dump({"base_dir": base_dir}, default_flow_style=False)
        )
        return defaults


def is_daemon_process() -> bool:
    """Whether this process is `dagster-daemon run` (or `python -m dagster._daemon run`, as `dagster dev` starts it)."""
    argv = sys.argv
    main = Path(argv[0]) if argv else Path()
    is_daemon = main.name == "dagster-daemon" or main.parts[-3:] == ("dagster", "_daemon", "__main__.py")
    return is_daemon and argv[1:2] == ["run"]


class LockedSqliteStorage(DagsterSqliteStorage):
    """DagsterSqliteStorage (`history/runs.db`, `schedules/schedules.db` in `base_dir`, the instance's folder,
    as Dagster's default: an existing instance keeps its runs), opened under a lock."""

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return {"base_dir": StringSource}

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData, config_value: dict[str, Any]
    ) -> LockedSqliteStorage:
        base_dir = Path(config_value["base_dir"])
        if not base_dir.is_absolute():
            raise ValueError(f"storage: base_dir must be an absolute path, got {str(base_dir)!r}")
        return cls.from_local(base_dir=str(base_dir), inst_data=inst_data)

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
