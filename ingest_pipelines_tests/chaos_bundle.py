"""Chaos scenario of the bundle workflow, as users run it: `dagster-daemon run -w workspace.yaml` on a DAGSTER_HOME
with the project's dagster.yaml, `ingest-pipelines serve` with its defaults, both started from the project folder,
bundles POSTed over HTTP, and kill -9 at random moments of the daemon alone, the daemon with its process group,
the daemon's code server, serve's code server and single run workers; killed processes are restarted as a
supervisor would. Afterwards every bundle job must end OK with its files and nothing incomplete be left.

`run_chaos(rounds, seed)` returns counts; the test calls it with small numbers, the soak (`make chaos`, through
`soak()`) with large ones; alone:

    python -m ingest_pipelines_tests.chaos_bundle --rounds 50 --seed 7
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from ingest_pipelines.testing import MotoServer, free_port
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS
from ingest_pipelines_tests.bundle_fixtures import answering, build_tar, get_state, project_home, run_worker_pid
from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, project_instance_yaml, wait_until

VICTIMS = ("daemon", "daemon_group", "code_server", "serve_code_server", "run_worker")
DROP, ARCHIVE, PREFIX = "chaos-drop", "chaos-archive", "archive/"
WORKFLOW = "chaos-bundles"


def _store(endpoint: str, name: str, bucket: str, prefix: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": "s3",
        "endpoint": endpoint,
        "region": "us-east-1",
        "bucket": bucket,
        "prefix": prefix,
        "accessKeyID": "$AWS_ACCESS_KEY_ID",
        "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
    }


def ingest_document(endpoint: str, workdir: Path) -> dict[str, Any]:
    return {
        "sources": [_store(endpoint, "drop", DROP, "incoming/")],
        "destinations": [_store(endpoint, "archive", ARCHIVE, PREFIX)],
        "workflows": [
            {
                "name": WORKFLOW,
                "kind": "bundle",
                "source": "drop",
                "destinations": ["archive"],
                # both reconcilers at work: the drop sensor (every 2 s) and serve's loop
                "sensor": "running",
                "interval": "2s",
                "retryDelay": "1s",
                "jobs": f"sqlite:///{workdir}/jobs.db",
            }
        ],
        "state": {"type": "filesystem", "path": str(workdir / "state")},
    }


def _bundle(rng: random.Random, index: int) -> tuple[bytes, dict[str, str]]:
    """A bundle of a few files (some large enough for the run to be caught mid-way); metadata.txt first or last."""
    files: dict[str, bytes] = {}
    for number in range(rng.randint(2, 6)):
        size = rng.choice([0, 100, 50_000, 400_000, 2_000_000])
        seed = f"{index}-{number}".encode()
        files[f"run{index}/f{number}.bin"] = (hashlib.sha256(seed).digest() * (size // 32 + 1))[:size]
    return build_tar(files, metadata_first=rng.random() < 0.5), {path: hashlib.sha1(data).hexdigest() for path, data in files.items()}


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the live child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, ValueError, IndexError):
            continue
    return found


def _code_server(pid: int) -> int | None:
    for child, command in _children(pid):
        if "api grpc" in command or "code-server" in command:
            return child
    return None


class ChaosDeployment:
    def __init__(self, workdir: Path, endpoint: str, instance_overrides: dict[str, Any] | None = None):
        self.workdir = workdir
        self.procs = ProcessGroup(workdir / "logs")
        self.config = workdir / "ingest.yaml"
        self.config.write_text(yaml.safe_dump(ingest_document(endpoint, workdir)))
        self.home = project_home(workdir / "dagster_home", project_instance_yaml(instance_overrides))
        self.env = child_env(DAGSTER_HOME=str(self.home), INGEST_CONFIG=str(self.config), **TEST_CREDENTIALS)
        self.url = ""

    def instance(self) -> Any:
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def start_daemon(self) -> None:
        self.procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], self.env, cwd=REPO_ROOT)

    def start_serve(self) -> None:
        port = free_port()
        self.procs.start("serve", [str(BIN / "ingest-pipelines"), "serve", "--port", str(port)], self.env, cwd=REPO_ROOT)
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answering(self.url), 180, "serve to answer", details=self.procs.logs)

    def kill(self, victim: str, instance: Any, rng: random.Random) -> bool:
        """kill -9 the victim; restart what a supervisor would restart. False when there was none to kill."""
        daemon = self.procs.procs["daemon"]
        if victim == "daemon":
            daemon.kill()
            daemon.wait(timeout=60)
            self.start_daemon()
        elif victim == "daemon_group":
            self.procs.kill("daemon", signal.SIGKILL)
            self.start_daemon()
        elif victim in ("code_server", "serve_code_server"):
            # a code server is the child of the daemon (or of serve), which replaces it itself
            parent = daemon.pid if victim == "code_server" else self.procs.procs["serve"].pid
            pid = _code_server(parent)
            if pid is None:
                return False
            os.kill(pid, signal.SIGKILL)
        elif victim == "run_worker":
            import dagster as dg

            def workers() -> list[int]:
                started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]), limit=10)
                return [pid for run in started if (pid := run_worker_pid(instance, run.run_id))]

            try:  # the bundles just posted start runs within seconds
                pids = wait_until(workers, 30, "a run worker to kill", interval=0.2)
            except AssertionError:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(pids), signal.SIGKILL)
        return True


def _archive_state(s3: Any) -> dict[str, Any]:
    objects: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=ARCHIVE):
        for item in page.get("Contents", []):
            objects[item["Key"]] = item["Key"]
    uploads = s3.list_multipart_uploads(Bucket=ARCHIVE).get("Uploads", [])
    return {"keys": sorted(objects), "uploads": len(uploads)}


def run_chaos(
    rounds: int,
    seed: int,
    workdir: Path | None = None,
    endpoint: str | None = None,
    per_round: int = 2,
    converge_seconds: float = 600,
    instance_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`rounds` rounds of: POST `per_round` bundles, kill -9 a random victim at a random moment (restarting it as a
    supervisor would). Then wait for every job to complete and check the archive. Returns counts: rounds, kills
    by victim, seconds_to_converge (from the end of the last round), lost (jobs not OK, or files missing or wrong), duplicated
    (bundles archived twice, or archive objects no job accounts for), incomplete (archive folders without
    metadata.json, staging leftovers, unfinished multipart uploads), attempts (runs requested in all)."""
    rng = random.Random(seed)
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chaos-bundle-")))
        if endpoint is None:
            endpoint = stack.enter_context(MotoServer(log_path=workdir / "moto.log")).endpoint_url
        return _run(rng, rounds, seed, workdir, endpoint, per_round, converge_seconds, stack, instance_overrides)


def _run(
    rng: random.Random,
    rounds: int,
    seed: int,
    workdir: Path,
    endpoint: str,
    per_round: int,
    converge_seconds: float,
    stack: contextlib.ExitStack,
    instance_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_credentials())
    for bucket in (DROP, ARCHIVE):
        s3.create_bucket(Bucket=bucket)
    deployment = ChaosDeployment(workdir, endpoint, instance_overrides)
    stack.callback(deployment.procs.stop_all)
    deployment.start_daemon()
    instance = stack.enter_context(deployment.instance())
    # the daemon first: two processes creating a fresh SQLite instance at once can break its schema stamp
    wait_until(lambda: instance.get_daemon_heartbeats(), 180, "the daemon's first heartbeat", details=deployment.procs.logs)
    deployment.start_serve()
    up, wall_start = time.monotonic(), time.time()
    expected: dict[int, dict[str, str]] = {}
    kills: Counter[str] = Counter()
    pause = threading.Event()  # never set: waits below are the chaos schedule's random moments, not synchronization
    for round_number in range(rounds):
        for _ in range(per_round):
            tar, files = _bundle(rng, len(expected))
            answer = _post(deployment, tar)
            expected[int(answer["job_id"])] = files
        victim = rng.choice(VICTIMS)
        pause.wait(rng.uniform(0.0, 4.0))
        if deployment.kill(victim, instance, rng):
            kills[victim] += 1
        if victim in ("daemon", "daemon_group"):
            wait_until(
                lambda: deployment.procs.alive("daemon"),
                30,
                f"the daemon restarted after round {round_number}",
                details=deployment.procs.logs,
            )
    started = time.monotonic()

    def all_complete() -> bool:
        return all(get_state(deployment.url, job_id)["complete"] for job_id in expected)

    wait_until(all_complete, converge_seconds, "every bundle job to complete", interval=1.0, details=deployment.procs.logs)
    converged = time.monotonic()
    states = {job_id: get_state(deployment.url, job_id) for job_id in expected}
    lost, duplicated, incomplete = [], 0, []
    archive = _archive_state(s3)
    folders: dict[str, set[str]] = {}
    for key in archive["keys"]:
        relative = key[len(PREFIX) :]
        folder, _, path = relative.partition("/")
        folders.setdefault(folder, set()).add(path)
    for job_id, files in expected.items():
        archived = folders.get(str(job_id), set())
        ok = states[job_id]["state"] == "OK" and archived == {*files, "metadata.json"}
        if ok:
            for path, digest in files.items():
                body = s3.get_object(Bucket=ARCHIVE, Key=f"{PREFIX}{job_id}/{path}")["Body"].read()
                ok = ok and hashlib.sha1(body).hexdigest() == digest
        if not ok:
            lost.append({"job_id": job_id, **{k: states[job_id][k] for k in ("state", "task", "exception")}})
    for folder, paths in folders.items():
        if not folder.isdigit() or int(folder) not in expected:
            duplicated += 1 if "metadata.json" in paths else 0
            if "metadata.json" not in paths:
                incomplete.append(folder)
        elif "metadata.json" not in paths:
            incomplete.append(folder)
    if archive["uploads"]:
        incomplete.append(f"{archive['uploads']} unfinished multipart uploads")
    import dagster as dg

    successes = Counter(
        run.tags.get("ingest/bundle_job")
        for run in instance.get_runs(filters=dg.RunsFilter(tags={"ingest/workflow": WORKFLOW}, statuses=[dg.DagsterRunStatus.SUCCESS]))
    )
    duplicated += sum(count - 1 for count in successes.values() if count > 1)
    from ingest_pipelines.bundles.attempts import RunView
    from ingest_pipelines.config import load_config
    from ingest_pipelines.defs.bundles.reconcile import InstanceRuns

    reasons = InstanceRuns(instance, load_config(deployment.config).workflows[0])
    attempts, retried = 0, {}
    for job_id in expected:
        runs = instance.get_run_records(filters=dg.RunsFilter(tags={"ingest/bundle_job": str(job_id)}))
        attempts += len(runs)
        if len(runs) > 1:
            retried[job_id] = [
                (
                    record.dagster_run.tags.get("ingest/attempt"),
                    record.dagster_run.status.value,
                    round(record.create_timestamp.timestamp() - wall_start),
                    round(record.end_time - wall_start) if record.end_time else None,
                    reasons.failure_message(RunView(record.dagster_run.run_id, "failed", 0.0))[:160]
                    if record.dagster_run.status.value != "SUCCESS"
                    else "",
                )
                for record in reversed(runs)
            ]
    return {
        "rounds": rounds,
        "seed": seed,
        "bundles": len(expected),
        "kills": dict(kills),
        "seconds_to_converge": round(converged - started, 1),
        "seconds_of_rounds": round(started - up, 1),
        "lost": len(lost),
        "lost_jobs": lost,
        "duplicated": duplicated,
        "incomplete": incomplete,
        "attempts": attempts,
        #: job id -> [(attempt, run status, created s, ended s (from the first round), why it failed)] of retried jobs
        "retried": retried,
    }


def soak(rounds: int, seed: int, workdir: Path) -> dict[str, Any]:
    """For `make chaos` (ingest_pipelines_tests/chaos.py): run_chaos on its own moto server, plus `ok` and `problems`."""
    result = run_chaos(rounds, seed, workdir=workdir)
    problems = [f"job {lost['job_id']} {lost['state']} at {lost['task']!r}: {lost['exception']}" for lost in result["lost_jobs"]]
    if result["duplicated"]:
        problems.append(f"{result['duplicated']} bundle(s) archived twice or objects no job accounts for")
    problems += [f"incomplete in the archive: {item}" for item in result["incomplete"]]
    return {**result, "ok": not problems, "problems": problems}


def _post(deployment: ChaosDeployment, tar: bytes) -> dict[str, Any]:
    """POST /ingest, again if the answer was lost (serve is never a victim, but a slow moment is no failure)."""

    def post() -> dict[str, Any] | None:
        response = requests.post(f"{deployment.url}/ingest", data=tar, timeout=120)
        return response.json() if response.status_code == 200 else None

    return wait_until(post, 120, "POST /ingest to answer 200", details=deployment.procs.logs)


def _boto_credentials() -> dict[str, str]:
    return {"aws_access_key_id": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}


@contextlib.contextmanager
def _environment() -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in TEST_CREDENTIALS}
    os.environ.update(TEST_CREDENTIALS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--per-round", type=int, default=2)
    args = parser.parse_args(argv)
    with _environment():
        result = run_chaos(args.rounds, args.seed, per_round=args.per_round)
    print(json.dumps(result, indent=2))
    return 0 if not result["lost"] and not result["duplicated"] and not result["incomplete"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
