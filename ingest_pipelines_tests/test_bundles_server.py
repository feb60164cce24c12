"""The HTTP front door as a real server process (uvicorn) on a free port: POST /ingest and POST /move end to
end with a real Dagster instance launching the runs, GET /get_state (404 for unknown jobs), ?workflow=NAME,
and the `job` admin subcommand changing what GET /get_state answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests

from ingest_pipelines.defs.runs import failure_message
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.bundle_fixtures import (
    ARCHIVE_BUCKET,
    ARCHIVE_PREFIX,
    DROP_BUCKET,
    SAMPLE_FILES,
    build_tar,
    bundle_config,
    file_entries,
    keys,
)
from ingest_pipelines_tests.conftest import REPO_ROOT, subprocess_env

# runs are launched at once (no daemon in the test); production uses the queued coordinator + daemon
INSTANCE_YAML = """
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
"""


def _wait(predicate: Any, timeout: float, what: str, process: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode} while waiting for {what}")
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def serve(config_path: Path, dagster_home: Path, *extra: str) -> Iterator[str]:
    port = free_port()
    log = (config_path.parent / f"serve-{port}.log").open("wb")
    env = subprocess_env(INGEST_CONFIG=str(config_path), DAGSTER_HOME=str(dagster_home))
    command = [sys.executable, "-m", "ingest_pipelines.cli", "serve", "--port", str(port), *extra]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        try:
            return requests.get(f"{url}/get_state", params={"job_id": 0}, timeout=2).status_code == 404
        except requests.ConnectionError:
            return False

    try:
        _wait(answering, 120, "the front door to answer", process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _state(url: str, job_id: int, **params: str) -> dict[str, Any]:
    response = requests.get(f"{url}/get_state", params={"job_id": job_id, **params}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _complete(url: str, job_id: int) -> dict[str, Any]:
    return _wait(lambda: (state := _state(url, job_id))["complete"] and state, 180, f"job {job_id} to complete")


def test_ingest_and_move_end_to_end_with_a_dagster_instance(s3_server, s3, tmp_path, write_config) -> None:
    config_path = write_config(bundle_config(s3_server, s3, tmp_path))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    with serve(config_path, home) as url:
        # the body is sent in chunks (chunked transfer) and streamed on to the drop bucket
        tar = build_tar(compress=True)
        response = requests.post(f"{url}/ingest", data=(tar[i : i + 4096] for i in range(0, len(tar), 4096)), timeout=120)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert set(answer) >= {"job_id", "state", "task", "task_percent", "updated", "created", "exception"}
        assert answer["state"] == "OK"
        job_id = answer["job_id"]
        state = _complete(url, job_id)
        assert (state["state"], state["task"], state["task_percent"], state["exception"]) == ("OK", "ingest metadata", "100.0", "")
        expected = sorted(f"{ARCHIVE_PREFIX}{job_id}/{path}" for path in [*SAMPLE_FILES, "metadata.json"])
        assert keys(s3, ARCHIVE_BUCKET) == expected
        body = s3.get_object(Bucket=ARCHIVE_BUCKET, Key=f"{ARCHIVE_PREFIX}{job_id}/mywork/project/proposal.doc")["Body"].read()
        assert body == SAMPLE_FILES["mywork/project/proposal.doc"]
        assert keys(s3, DROP_BUCKET) == [f"incoming/uploads/{job_id}.tar"]

        # POST /move: files already in the drop bucket are moved into the archive
        files = {"instrument/run7.dat": b"7" * 5000}
        s3.put_object(Bucket=DROP_BUCKET, Key="incoming/instrument/run7.dat", Body=files["instrument/run7.dat"])
        document = file_entries(files)
        document[1]["source"] = f"s3://{DROP_BUCKET}/incoming/instrument/run7.dat"
        moved = requests.post(f"{url}/move", data=json.dumps(document), timeout=120)
        assert moved.status_code == 200, moved.text
        move_id = moved.json()["job_id"]
        assert _complete(url, move_id)["state"] == "OK"
        assert keys(s3, ARCHIVE_BUCKET, f"{ARCHIVE_PREFIX}{move_id}/") == [
            f"{ARCHIVE_PREFIX}{move_id}/instrument/run7.dat",
            f"{ARCHIVE_PREFIX}{move_id}/metadata.json",
        ]
        assert "incoming/instrument/run7.dat" not in keys(s3, DROP_BUCKET)

        # a move document naming a file outside the drop location is refused at once
        outside = file_entries({"x": b"x"})
        outside[1]["source"] = "s3://elsewhere/x"
        refused = requests.post(f"{url}/move", data=json.dumps(outside), timeout=30)
        assert refused.status_code == 400 and "outside the drop location" in refused.json()["error"]

        # the runs the front door launched, in the Dagster instance (the job is complete before the check step ends)
        with dg.DagsterInstance.from_config(str(home)) as instance:

            def finished() -> dict[str, Any] | None:
                runs = {run.tags["dagster/partition"]: run.status for run in instance.get_runs()}
                return (
                    runs if all(status in {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE} for status in runs.values()) else None
                )

            runs = _wait(finished, 120, "the runs to finish")
            every = [(r.tags.get("dagster/partition"), r.tags.get("ingest/attempt"), r.status.value) for r in instance.get_runs()]
            why = [failure_message(instance, r.run_id) for r in instance.get_runs() if r.status != dg.DagsterRunStatus.SUCCESS]
            # one run per job, of its first attempt
            assert sorted(every) == [(str(job_id), "1", "SUCCESS"), (str(move_id), "1", "SUCCESS")], why
            assert set(instance.get_dynamic_partitions("pacifica_bundles__bundles")) == set(runs)


def test_get_state_404_workflow_choice_and_the_job_subcommand(s3_server, s3, tmp_path, write_config) -> None:
    document = bundle_config(s3_server, s3, tmp_path)
    second = {**document["workflows"][0], "name": "second", "uploadPrefix": "second/"}
    document["workflows"].append(second)
    config_path = write_config(document)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with serve(config_path, home, "--no-launch") as url:
        missing = requests.get(f"{url}/get_state", params={"job_id": 12345}, timeout=10)
        assert missing.status_code == 404 and missing.json() == {"error": "job 12345 not found"}
        # a number no database holds is an unknown job too (was a 500 from SQLite's OverflowError)
        huge = requests.get(f"{url}/get_state", params={"job_id": "9" * 30}, timeout=10)
        assert huge.status_code == 404 and huge.json() == {"error": f"job {'9' * 30} not found"}
        for bad in ("", "abc", "-1", "1.5", "\u0663"):
            assert requests.get(f"{url}/get_state", params={"job_id": bad}, timeout=10).status_code == 400, bad
        assert requests.get(f"{url}/ingest", timeout=10).status_code == 405
        # a move document is metadata: a huge body is refused (413), not read into memory (300 MB raised RSS by 560 MB)
        move = f"{url}/move?workflow=second"
        import socket

        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=30) as client:
            client.sendall(f"POST /move?workflow=second HTTP/1.1\r\nHost: x\r\nContent-Length: {10**12}\r\n\r\n[]".encode())
            assert client.recv(1024).startswith(b"HTTP/1.1 413")
        chunks = (b" " * (1024 * 1024) for _ in range(65))
        assert requests.post(move, data=chunks, timeout=60).status_code == 413
        assert requests.post(f"{url}/ingest", data=build_tar(), timeout=30).status_code == 400  # which workflow?
        assert requests.post(f"{url}/ingest", params={"workflow": "nope"}, data=b"", timeout=30).status_code == 404
        answer = requests.post(f"{url}/ingest", params={"workflow": "second"}, data=build_tar(), timeout=60).json()
        job_id = answer["job_id"]
        assert keys(s3, DROP_BUCKET) == [f"incoming/second/{job_id}.tar"]
        assert _state(url, job_id)["state"] == "OK"

        command = [sys.executable, "-m", "ingest_pipelines.cli", "job", "--job-id", str(job_id), "--state", "FAILED"]
        command += ["--task", "ingest files", "--task-percent", "0", "--exception", "Failed by administrator"]
        env = subprocess_env(INGEST_CONFIG=str(config_path))
        done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        state = _state(url, job_id, workflow="second")
        assert (state["state"], state["task"], state["task_percent"], state["complete"], state["exception"]) == (
            "FAILED",
            "ingest files",
            "0.0",
            True,
            "Failed by administrator",
        )
        assert json.loads(done.stdout)["state"] == "FAILED"
        unknown = subprocess.run([*command[:5], "999", *command[6:]], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert unknown.returncode == 1 and "job 999 not found" in unknown.stderr


def test_job_subcommand_refuses_bad_input_without_a_traceback(s3_server, s3, tmp_path, write_config) -> None:
    from ingest_pipelines.cli import main

    config_path = write_config(bundle_config(s3_server, s3, tmp_path))
    base = ["job", "--config", str(config_path), "--job-id", "1"]
    assert main([*base, "--workflow", "nope"]) == 2  # was a ConfigError traceback
    assert main(["job", "--config", str(tmp_path / "missing.yaml"), "--job-id", "1"]) == 2
    with pytest.raises(SystemExit):
        main([*base, "--task-percent", "500"])


def test_body_reader_streams_the_exact_bytes_whatever_the_read_sizes() -> None:
    import anyio
    import anyio.to_thread

    from ingest_pipelines.bundles.server import AsyncBodyReader

    body = bytes(range(256)) * 4099
    chunk_sizes = [1, 7, 65536, 3, 100_000]

    async def chunks() -> Any:
        at, index = 0, 0
        while at < len(body):
            size = chunk_sizes[index % len(chunk_sizes)]
            yield body[at : at + size]
            at, index = at + size, index + 1

    async def read_all() -> tuple[bytes, int]:
        reader = AsyncBodyReader(chunks())

        def consume() -> bytes:
            parts, sizes = [], [5, 70_000, 1, 8 * 1024 * 1024]
            while part := reader.read(sizes[len(parts) % len(sizes)]):
                parts.append(part)
            return b"".join(parts) + reader.read()

        return await anyio.to_thread.run_sync(consume), reader.size

    data, size = anyio.run(read_all)
    assert data == body and size == len(body)


def test_kill_9_of_the_front_door_mid_upload_then_restart_fails_that_job(s3_server, s3, tmp_path, write_config) -> None:
    import socket

    from ingest_pipelines.bundles.jobs import JobStore

    config_path = write_config(bundle_config(s3_server, s3, tmp_path))
    home = tmp_path / "dagster_home"
    home.mkdir()
    jobs = JobStore(f"sqlite:///{tmp_path}/jobs.db")
    port = free_port()
    env = subprocess_env(INGEST_CONFIG=str(config_path), DAGSTER_HOME=str(home))
    command = [sys.executable, "-m", "ingest_pipelines.cli", "serve", "--port", str(port), "--no-launch"]
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _answers(url), 120, "the front door to answer", process)
        # a client that sends half a body and stalls: the job exists at UPLOADING when the process dies
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        job = _wait(lambda: next(iter(jobs.uploading("pacifica-bundles")), None), 60, "the upload to start", process)
        process.kill()
        process.wait()
        client.close()
        assert jobs.get(job.job_id).complete is False
        process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _answers(url), 120, "the restarted front door to answer", process)
        state = _state(url, job.job_id)
        assert (state["state"], state["task"], state["complete"]) == ("FAILED", "UPLOADING", True)
        assert "stopped while receiving this upload" in state["exception"]
        # nothing reached the drop location and nothing was archived
        assert keys(s3, DROP_BUCKET) == [] and keys(s3, ARCHIVE_BUCKET) == []
        # an upload in progress in a live process (this test's) is left alone
        live = jobs.create("pacifica-bundles", origin="ingest", run_id=f"upload:{socket.gethostname()[:40]}:{os.getppid()}")
        other_host = jobs.create("pacifica-bundles", origin="ingest", run_id="upload:elsewhere:1")
        from ingest_pipelines.bundles.server import fail_orphaned_uploads

        assert fail_orphaned_uploads(jobs, "pacifica-bundles") == []
        assert not jobs.get(live.job_id).complete and not jobs.get(other_host.job_id).complete
    finally:
        process.kill()
        process.wait()


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/get_state", params={"job_id": 0}, timeout=2).status_code == 404
    except requests.ConnectionError:
        return False


def test_job_subcommand_retry_gives_a_failed_job_one_more_attempt(s3_server, s3, tmp_path, write_config, capsys) -> None:
    from ingest_pipelines.bundles.jobs import JobStore
    from ingest_pipelines.cli import main

    config_path = write_config(bundle_config(s3_server, s3, tmp_path))
    jobs = JobStore(f"sqlite:///{tmp_path}/jobs.db")
    job = jobs.create("pacifica-bundles", "a.tar", "e", task="open tar")
    assert jobs.claim(job.job_id, 0) is not None
    jobs.fail(job.job_id, "open tar", "run x was not started within 5m")
    assert main(["job", "--config", str(config_path), "--job-id", str(job.job_id), "--retry"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["state"], printed["complete"], printed["exception"]) == ("OK", False, "retry requested by an administrator")
    retried = jobs.get(job.job_id)
    # due now, as the next attempt (the reconcilers launch it)
    assert retried.retry_at is not None and retried.attempt == 1 and [j.job_id for j in jobs.unfinished("pacifica-bundles")] == [job.job_id]
