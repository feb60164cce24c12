"""A warm run worker: a process that has already imported Dagster and this package and waits for one run.

Dagster's DefaultRunLauncher starts every run in a new interpreter (the code server spawns it), which imports
Dagster and loads the code location before the run's first step: about a second per run on a 2-core machine,
most of a small run's time. `LocalRunLauncher` keeps one of these processes ready: it imports what a run
needs (everything but the code location's definitions, which are loaded fresh for the run, so a changed
ingest.yaml counts), reads the run's `ExecuteRunArgs` as one line on stdin, and then is exactly
`dagster api execute_run`. EOF on stdin (the process that started it is gone) ends it.

If a module it imported changed on disk while it waited (an upgrade, an edited checkout), it runs the run in a
new interpreter instead (`exec` of `dagster api execute_run`, same pid), so a run never executes old code.

    python -m ingest_pipelines.defs.run_worker      # started by LocalRunLauncher, not by hand
"""

from __future__ import annotations

import os
import signal
import sys
import time

#: the environment variable `dagster api execute_run` reads its input from (not argv: `ps` shows argv)
ARGS_ENV = "DAGSTER_EXECUTE_RUN_ARGS"


def warm() -> None:
    """Import what a run imports: Dagster's run entry point, what building this package's definitions from the
    current ingest.yaml imports (its workflows' modules, plugins, boto3) and what opening the instance imports,
    and load the S3 client's models. The definitions and the instance made here are dropped: the run makes its own."""
    import dagster._cli
    import dagster._cli.api
    import dagster._core.execution.api  # noqa: F401
    from dagster import DagsterInstance

    from ingest_pipelines.config import load_config
    from ingest_pipelines.defs import build_definitions
    from ingest_pipelines.storage.s3 import preload_models

    preload_models(background=False)
    try:
        build_definitions(load_config())
    except Exception:  # a config the run itself will report; warming is best effort
        pass
    if os.environ.get("DAGSTER_HOME"):
        # the first instance a process opens costs ~0.25 s (storage modules, schema checks); the run opens its own
        try:
            with DagsterInstance.get() as instance:
                instance.get_runs(limit=1)
        except Exception:
            pass


def loaded_files() -> list[str]:
    """The source files of every imported module."""
    files = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str):
            files.append(path)
    return files


def changed_since(files: list[str], moment: float) -> str | None:
    """The first of `files` modified after `moment` (or gone), else None."""
    for path in files:
        try:
            if os.stat(path).st_mtime > moment:
                return path
        except OSError:
            return path
    return None


def main() -> None:
    started = time.time()
    # a Ctrl-C meant for the daemon (same process group) does not concern a worker without a run: the
    # daemon's exit closes its stdin, which ends it
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    warm()
    files = loaded_files()
    line = sys.stdin.readline().strip()
    if not line:
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    changed = changed_since(files, started)
    if changed:
        print(f"run worker {os.getpid()}: {changed} changed since it started; running the run in a new interpreter", file=sys.stderr)
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "dagster", "api", "execute_run"], {**os.environ, ARGS_ENV: line})
    from dagster._cli.api import execute_run_command

    # the body of `dagster api execute_run` (it exits non-zero itself where the run asks for that)
    execute_run_command.callback(input_json=line, compressed_input_json=None)  # type: ignore[misc]


if __name__ == "__main__":
    main()
