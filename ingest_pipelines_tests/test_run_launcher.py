"""The run launcher's warm run worker: the real daemon on the project's dagster.yaml hands sync runs to a worker
it started ahead (the run's pid is the worker's, the code server spawns nothing), keeps the next one ready and
takes it down with it; a worker runs a run in a new interpreter when a module it imported changed while it
waited; terminating a warm worker's run interrupts that worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from ingest_pipelines.defs.run_launcher import WARM_WORKER_TAG, LocalRunLauncher, loads_code_itself
from ingest_pipelines.defs.run_worker import changed_since
from ingest_pipelines_tests.bundle_fixtures import project_home
from ingest_pipelines_tests.chaos_sync import children, cmdline
from ingest_pipelines_tests.conftest import REPO_ROOT, subprocess_env
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, wait_until
from ingest_pipelines_tests.sync_fixtures import bucket_keys, put
from ingest_pipelines_tests.warm_worker_job import warm_worker_job

WORKER_MODULE = b"ingest_pipelines.defs.run_worker"


def _engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
    return [record.event_log_entry.message or "" for record in records]


def _workers(daemon_pid: int) -> list[int]:
    return [pid for pid in children(daemon_pid) if WORKER_MODULE in cmdline(pid)]


@pytest.mark.slow
def test_the_daemon_hands_runs_to_a_warm_worker_and_takes_its_spare_down_with_it(tmp_path: Path, s3: Any, s3_server: Any) -> None:
    for bucket in ("warm-src", "warm-dst"):
        s3.create_bucket(Bucket=bucket)
    store = {"type": "s3", "endpoint": s3_server.endpoint_url, "region": "us-east-1"}
    config = tmp_path / "ingest.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "sources": [{"name": "src", "bucket": "warm-src", **store}],
                "destinations": [{"name": "dst", "bucket": "warm-dst", **store}],
                "workflows": [{"name": "warm", "source": "src", "destinations": ["dst"], "sensor": "running", "interval": "1s"}],
                "state": {"type": "filesystem", "path": str(tmp_path / "state")},
            }
        )
    )
    home = project_home(tmp_path / "dagster_home")
    procs = ProcessGroup(tmp_path / "logs")
    daemon = procs.start(
        "daemon",
        [str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
        child_env(DAGSTER_HOME=str(home), INGEST_CONFIG=str(config)),
        cwd=REPO_ROOT,
    )
    try:
        # the daemon gets a worker ready as it starts, before any run exists
        spare = wait_until(lambda: _workers(daemon.pid), 60, "a warm worker started by the daemon", details=procs.logs)[0]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            for round_, names in enumerate((["a b.txt", "ü/ß"], ["c+d"])):
                for name in names:
                    put(s3, "warm-src", name, name.encode())

                def succeeded(count: int = round_ + 1) -> list[dg.DagsterRun]:
                    runs = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]))
                    return runs if len(runs) >= count else []

                run = wait_until(succeeded, 120, f"run {round_ + 1} to succeed", details=procs.logs)[0]
                messages = _engine_messages(instance, run.run_id)
                handed = [m for m in messages if "Run handed to the warm run worker" in m]
                assert handed, messages
                pid = handed[0].split("pid: ")[1].rstrip(").")
                # the run ran in the worker it was handed to, not in a process spawned by the code server
                assert f"Started process for run (pid: {pid})." in messages, messages
                assert run.tags[WARM_WORKER_TAG]
                if round_ == 0:
                    assert int(pid) == spare
            assert bucket_keys(s3, "warm-dst") == bucket_keys(s3, "warm-src")
        # the next worker waits; kill -9 of the daemon alone (not its group) ends it too: its stdin closes
        waiting = wait_until(lambda: _workers(daemon.pid), 30, "the next warm worker", details=procs.logs)
        os.kill(daemon.pid, signal.SIGKILL)
        daemon.wait()
        wait_until(
            lambda: not any(Path(f"/proc/{pid}").exists() and WORKER_MODULE in cmdline(pid) for pid in waiting),
            30,
            "the waiting worker to exit",
        )
    finally:
        procs.stop_all()


def _launch_by_hand(instance: dg.DagsterInstance, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], dg.DagsterRun]:
    """A run of warm_worker_job handed to a worker started here, as LocalRunLauncher does."""
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    recon = dg.reconstructable(warm_worker_job)
    run = instance.create_run_for_job(job_def=warm_worker_job, job_code_origin=recon.get_python_origin())
    worker = subprocess.Popen(
        [sys.executable, "-m", "ingest_pipelines.defs.run_worker"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())  # type: ignore[arg-type]
    assert worker.stdin is not None
    worker.stdin.write(serialize_value(args).encode() + b"\n")
    worker.stdin.close()
    return worker, run


def _finish(worker: subprocess.Popen[bytes]) -> bytes:
    """The worker's stderr, once it has exited."""
    assert worker.stderr is not None
    err = worker.stderr.read()
    worker.wait(timeout=60)
    return err


@pytest.mark.slow
@pytest.mark.parametrize("edited", [False, True])
def test_a_worker_runs_the_run_in_a_new_interpreter_when_an_imported_module_changed(tmp_path: Path, edited: bool) -> None:
    # a module the worker imports as it starts (sitecustomize, from PYTHONPATH) stands for an upgraded package
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("")
    out = tmp_path / "pid"
    env = subprocess_env(PYTHONPATH=os.pathsep.join([str(site), str(REPO_ROOT)]), WARM_WORKER_OUT=str(out))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        if edited:
            later = time.time() + 60
            os.utime(site / "sitecustomize.py", (later, later))
        worker, run = _launch_by_hand(instance, env)
        err = _finish(worker)
        assert worker.returncode == 0, err.decode()
        assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS  # type: ignore[union-attr]
        assert int(out.read_text()) == worker.pid  # exec keeps the pid: run monitoring still finds it
        note = f"{site / 'sitecustomize.py'} changed since it started; running the run in a new interpreter"
        assert (note in err.decode()) is edited, err.decode()


@pytest.mark.slow
def test_terminating_a_warm_workers_run_interrupts_the_worker(tmp_path: Path) -> None:
    out, gate = tmp_path / "pid", tmp_path / "gate"
    env = subprocess_env(PYTHONPATH=str(REPO_ROOT), WARM_WORKER_OUT=str(out), WARM_WORKER_GATE=str(gate))
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        worker, run = _launch_by_hand(instance, env)
        instance.add_run_tags(run.run_id, {WARM_WORKER_TAG: socket.gethostname()})
        wait_until(out.exists, 60, "the op to start")
        launcher = LocalRunLauncher()
        launcher.register_instance(instance)
        assert launcher.terminate(run.run_id)
        _finish(worker)
        final = instance.get_run_by_id(run.run_id)
        assert final is not None and final.status == dg.DagsterRunStatus.CANCELED, final
        assert not gate.exists()  # the op did not run to its end: the interrupt stopped it


def test_changed_since_names_a_file_modified_after_the_moment_or_gone(tmp_path: Path) -> None:
    old, gone = tmp_path / "old.py", tmp_path / "gone.py"
    old.write_text("")
    os.utime(old, (1_000_000, 1_000_000))
    assert changed_since([str(old)], 2_000_000) is None
    assert changed_since([str(old)], 500_000) == str(old)
    assert changed_since([str(old), str(gone)], 2_000_000) == str(gone)


def test_the_daemon_prestarts_a_worker_only_for_code_it_loads_itself(tmp_path: Path) -> None:
    managed, grpc = tmp_path / "managed.yaml", tmp_path / "grpc.yaml"
    managed.write_text("load_from:\n  - python_module: {module_name: ingest_pipelines.definitions}\n")
    grpc.write_text("load_from:\n  - grpc_server: {socket: /tmp/s, location_name: a}\n")  # what `dagster dev` gives it
    assert loads_code_itself(["-w", str(managed)])
    assert loads_code_itself(["--workspace", str(grpc), "--workspace", str(managed)])
    assert not loads_code_itself(["--workspace", str(grpc)])
    assert loads_code_itself(["-m", "ingest_pipelines.definitions"])
    assert not loads_code_itself(["-w", str(tmp_path / "missing.yaml")])
    other = tmp_path / "other.yaml"
    other.write_text("load_from:\n  - python_module: {module_name: m, executable_path: /opt/other/bin/python}\n")
    assert not loads_code_itself(["-w", str(other)])
    other.write_text(f"load_from:\n  - python_module: {{module_name: m, executable_path: {sys.executable}}}\n")
    assert loads_code_itself(["-w", str(other)])
