"""Pieces for the deployment tests: a fresh PostgreSQL database per test, Redis, Dagster processes
started as separate process groups (logs kept for failure messages), and bounded polling."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from ingest_pipelines_tests.conftest import REPO_ROOT, subprocess_env

PG_HOST = os.environ.get("INGEST_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("INGEST_TEST_PG_PORT", "5432"))
#: trust auth on this machine: the first of these roles that connects is used
PG_USERS = ("postgres", "root")
REDIS_URL = os.environ.get("INGEST_TEST_REDIS", "redis://127.0.0.1:6379")
#: Redis database the Celery tests own (flushed before use); other tests on the machine use others
REDIS_DB = int(os.environ.get("INGEST_TEST_REDIS_DB", "13"))
BIN = Path(sys.executable).parent
DEPLOY_INSTANCE = REPO_ROOT / "deploy" / "dagster.yaml"

T = TypeVar("T")


def service_unavailable(reason: str) -> None:
    """Skip with the reason on a developer machine without the service; fail in CI, where .ci/run starts it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


def _pg_connect(user: str, dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, connect_timeout=5)


def pg_admin_user() -> str:
    errors = []
    for user in PG_USERS:
        for dbname in ("postgres", "test"):
            try:
                _pg_connect(user, dbname).close()
                return user
            except Exception as exc:  # any failure means "try the next role"
                errors.append(f"{user}@{dbname}: {str(exc).strip()}")
    service_unavailable(f"PostgreSQL on {PG_HOST}:{PG_PORT} is not reachable ({'; '.join(errors)})")
    raise AssertionError("unreachable")


@contextmanager
def fresh_database() -> Iterator[dict[str, str]]:
    """CREATE DATABASE ingest_test_<random>, yield the DAGSTER_PG_* environment, DROP it afterwards."""
    user = pg_admin_user()
    name = f"ingest_test_{secrets.token_hex(5)}"
    admin = _pg_connect(user, "postgres")
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield {
            "DAGSTER_PG_HOST": PG_HOST,
            "DAGSTER_PG_PORT": str(PG_PORT),
            "DAGSTER_PG_USERNAME": user,
            "DAGSTER_PG_PASSWORD": "",
            "DAGSTER_PG_DB": name,
        }
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def pg_url(env: dict[str, str]) -> str:
    """SQLAlchemy URL of the database in a DAGSTER_PG_* environment."""
    return f"postgresql+psycopg2://{env['DAGSTER_PG_USERNAME']}@{env['DAGSTER_PG_HOST']}:{env['DAGSTER_PG_PORT']}/{env['DAGSTER_PG_DB']}"


def pg_query(env: dict[str, str], sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = _pg_connect(env["DAGSTER_PG_USERNAME"], env["DAGSTER_PG_DB"])
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())
    finally:
        conn.close()


def redis_db_url(db: int = REDIS_DB) -> str:
    """A flushed Redis database for this test, or skip/fail when Redis is not there."""
    import redis

    url = f"{REDIS_URL}/{db}"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5)
        client.flushdb()
        client.close()
    except Exception as exc:  # connection refused, timeout, auth: all mean unavailable
        service_unavailable(f"Redis at {url} is not reachable ({exc})")
    return url


def instance_home(path: Path, instance_yaml: Path = DEPLOY_INSTANCE, dequeue_seconds: int | None = None) -> Path:
    """A DAGSTER_HOME holding deploy/dagster.yaml (PostgreSQL from the DAGSTER_PG_* environment);
    `dequeue_seconds` shortens the run queue's poll (5 s) so that a test's serial runs follow quickly."""
    path.mkdir(parents=True, exist_ok=True)
    if dequeue_seconds is None:
        shutil.copy(instance_yaml, path / "dagster.yaml")
        return path
    document = yaml.safe_load(instance_yaml.read_text())
    document["run_coordinator"].setdefault("config", {})["dequeue_interval_seconds"] = dequeue_seconds
    (path / "dagster.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return path


#: the suite's chaos tests fail dead runs sooner than the shipped dagster.yaml (15 s poll, start timeout)
#: so that a kill while a run is STARTING converges within their budget; everything else is as shipped
FAST_MONITORING = {"run_monitoring": {"poll_interval_seconds": 5, "start_timeout_seconds": 30, "cancel_timeout_seconds": 30}}


def project_instance_yaml(overrides: dict[str, dict[str, Any]] | None = None) -> str:
    """The project's dagster.yaml, with some sections' settings replaced."""
    document = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    for section, values in (overrides or {}).items():
        document.setdefault(section, {}).update(values)
    return yaml.safe_dump(document, sort_keys=False)


def child_env(**extra: str) -> dict[str, str]:
    """subprocess_env() with the venv's scripts first on PATH (dagster-celery starts `celery` by name)."""
    env = subprocess_env(**extra)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.pop("AWS_CA_BUNDLE", None)
    return env


class ProcessGroup:
    """Named child processes, each in its own session so that it and its children stop together."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        self.starts[name] = self.starts.get(name, 0) + 1
        log = (self.log_dir / f"{name}.log").open("ab")
        log.write(f"\n===== start #{self.starts[name]}: {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 20.0) -> None:
        """Signal the process group; SIGKILL it if it outlives `timeout`."""
        proc = self.procs.get(name)
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        # children that outlived the leader (run workers) are in the same group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name, signal.SIGTERM, timeout=15)

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self, tail: int = 2500) -> str:
        return "\n".join(f"--- {name}.log ---\n{self.log(name, tail)}" for name in self.procs)


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.5, details: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` (and `details()`) after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # a server still starting refuses connections
            last_error = exc
        time.sleep(interval)
    extra = f"\nlast error: {last_error!r}" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}\n{details() if details else ''}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=3) as resp:
        return resp.status == 200
