"""`ingest-pipelines demo`: local S3 + sample data + `dagster dev` on a port, a readable log, no UI modal; Ctrl-C stops everything."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from ingest_pipelines.config import load_config
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.conftest import subprocess_env
from ingest_pipelines_tests.test_definitions import validate


def wait_for(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"demo exited early with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "kill"])
def test_demo_serves_the_ui_quietly_and_a_signal_stops_everything(tmp_path: Path, stop_signal: signal.Signals) -> None:
    ui_port, s3_port = free_port(), free_port()
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ingest_pipelines.cli", "demo", "--dir", str(workdir), "--port", str(ui_port), "--s3-port", str(s3_port)],
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{ui_port}/server_info", proc, timeout=240)
        assert port_open(s3_port), "the demo's S3 server is not listening"
        config_path = workdir / "ingest.yaml"
        document = yaml.safe_load(config_path.read_text())
        config = load_config(config_path)
        assert {w.name for w in config.workflows} == {w["name"] for w in document["workflows"]}
        assert all(w.sensor == "running" for w in config.workflows)
        instance = yaml.safe_load((workdir / "dagster_home" / "dagster.yaml").read_text())
        assert instance["nux"] == {"enabled": False}, "the demo's instance shows no newsletter modal"
        assert instance["run_coordinator"]["class"] == "IngestRunCoordinator", "the rest is dagster.yaml's"
        if stop_signal == signal.SIGINT:  # once is enough: the config is the same for both signals
            result = validate(config_path, workdir)
            assert result.returncode == 0, result.stdout + result.stderr
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, stop_signal)
        try:
            output = proc.communicate(timeout=60)[0].decode(errors="replace")
            print(output[-5000:])  # pytest shows it when the test fails, also when it fails before the demo stopped
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert proc.returncode == 0, output[-3000:]
    # the log is readable: no warnings for our deliberate uses (partitioned checks, `dagster dev`), no DEBUG event lines
    assert "PreviewWarning" not in output and "SupersessionWarning" not in output, output[-3000:]
    assert " - DEBUG - " not in output, output[-3000:]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (port_open(ui_port) or port_open(s3_port)):
        time.sleep(0.2)
    assert not port_open(ui_port), "dagster dev still listening after Ctrl-C"
    assert not port_open(s3_port), "the S3 server still listening after Ctrl-C"
