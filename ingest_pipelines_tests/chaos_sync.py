"""Chaos for a sync workflow through the documented processes: the real `dagster-daemon run -w workspace.yaml`
on a DAGSTER_HOME with the project's dagster.yaml, random puts / overwrites / deletes over odd keys, and
kill -9 at random moments of the daemon alone, the daemon with its process group, its code server, or a run
worker (restarted as a supervisor would restart the daemon). Then it waits for convergence and counts what
was lost or doubled: the mirror and the folder equal the source, every current version has exactly one
record, every deleted key that had a record ends with its delete record.

Used by test_chaos_sync.py (small) and `make chaos` (ingest_pipelines_tests/chaos.py, the soak).
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, project_instance_yaml

VICTIMS = ("daemon", "daemon-group", "code-server", "run-worker")


@dataclass
class ChaosSettings:
    rounds: int = 12
    seed: int = 1
    #: "list" (listing passes over a versioned bucket) or "events" (S3 notifications into SQS)
    mode: str = "list"
    #: a versioned source (ListObjectVersions). moto sends no S3 event for a delete on a versioned bucket
    #: (AWS sends ObjectRemoved:DeleteMarkerCreated), so events mode runs on an unversioned one by default
    versioned: bool | None = None
    keys: int = 44
    #: seconds between two rounds, drawn uniformly
    pause: tuple[float, float] = (0.5, 3.0)
    #: chance that a round ends with a kill
    kill_chance: float = 0.6
    victims: tuple[str, ...] = VICTIMS
    #: victims in this order, one per kill, each waited for (a bounded poll) when absent: every kind is hit
    schedule: tuple[str, ...] = ()
    converge_timeout: float = 240.0
    #: instance settings that differ from the project's dagster.yaml (the suite shortens run monitoring)
    instance_overrides: dict[str, Any] = field(default_factory=dict)
    #: workflow keys beyond the config's (all README keys)
    workflow: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChaosReport:
    rounds: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    seconds_to_converge: float | None = None
    lost: int = 0
    stale: int = 0
    missing_records: int = 0
    duplicated_records: int = 0
    missing_delete_records: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return self.seconds_to_converge is not None

    def summary(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "kills": dict(self.kills),
            "operations": dict(self.operations),
            "seconds_to_converge": None if self.seconds_to_converge is None else round(self.seconds_to_converge, 1),
            "lost": self.lost,
            "stale": self.stale,
            "missing_records": self.missing_records,
            "duplicated_records": self.duplicated_records,
            "missing_delete_records": self.missing_delete_records,
            "problems": self.problems[:20],
        }


def odd_keys(count: int) -> list[str]:
    """Keys users have: spaces, '+', '%', unicode, deep folders, a leading dash."""
    shapes = [
        "plain/{i}.txt",
        "with space/{i} file.txt",
        "plus+sign/{i}+x",
        "pct%25/{i}%20",
        "unicodé/ü{i}.bin",
        "deep/a/b/c/{i}",
        "-dash{i}",
    ]
    return [shapes[i % len(shapes)].format(i=i) for i in range(count)]


class SyncChaos:
    """One workflow, one instance, one daemon; `run()` does the rounds and the verification."""

    def __init__(self, workdir: Path, endpoint: str, s3: Any, sqs: Any, settings: ChaosSettings):
        self.workdir = workdir
        self.endpoint = endpoint
        self.s3 = s3
        self.sqs = sqs
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.home = workdir / "dagster_home"
        self.folder = workdir / "folder"
        self.procs = ProcessGroup(workdir / "logs")
        self.keys = odd_keys(settings.keys)
        self.counter = 0
        self.report = ChaosReport()

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> None:
        for bucket in ("chaos-src", "chaos-dst", "chaos-rec"):
            self.s3.create_bucket(Bucket=bucket)
        if self.settings.versioned if self.settings.versioned is not None else self.settings.mode == "list":
            self.s3.put_bucket_versioning(Bucket="chaos-src", VersioningConfiguration={"Status": "Enabled"})
        store = {
            "type": "s3",
            "endpoint": self.endpoint,
            "region": "us-east-1",
            "accessKeyID": "$AWS_ACCESS_KEY_ID",
            "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
        }
        source: dict[str, Any] = {"name": "src", "bucket": "chaos-src", **store}
        if self.settings.mode == "events":
            queue = self.sqs.create_queue(QueueName=f"chaos-events-{self.settings.seed}")["QueueUrl"]
            arn = self.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            self.s3.put_bucket_notification_configuration(
                Bucket="chaos-src",
                NotificationConfiguration={
                    "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]
                },
            )
            source.update(changes="events", queueUrl=queue)
        document = {
            "sources": [source],
            "destinations": [
                {"name": "mirror", "bucket": "chaos-dst", "deletes": True, **store},
                {
                    "name": "records",
                    "type": "s3-records",
                    "bucket": "chaos-rec",
                    "format": "json",
                    "bufferSize": 5,
                    **{k: v for k, v in store.items() if k != "type"},
                },
                {"name": "folder", "type": "filesystem", "path": str(self.folder), "deletes": True},
            ],
            "workflows": [
                {
                    "name": "chaos",
                    "kind": "sync",
                    "source": "src",
                    "destinations": ["mirror", "records", "folder"],
                    "interval": "2s",
                    "sensor": "running",
                    **self.settings.workflow,
                }
            ],
            "state": {"type": "filesystem", "path": str(self.workdir / "state")},
        }
        (self.workdir / "ingest.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(project_instance_yaml(self.settings.instance_overrides))

    def env(self) -> dict[str, str]:
        return child_env(DAGSTER_HOME=str(self.home), INGEST_CONFIG=str(self.workdir / "ingest.yaml"))

    def start_daemon(self) -> None:
        self.procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")], self.env(), cwd=REPO_ROOT)

    # ------------------------------------------------------------------ chaos

    def mutate(self) -> None:
        """A few puts (new keys and overwrites) and deletes; every body is unique, so each version is too."""
        for _ in range(self.rng.randint(3, 10)):
            key = self.rng.choice(self.keys)
            if self.rng.random() < 0.25:
                self.s3.delete_object(Bucket="chaos-src", Key=key)
                self.report.operations["delete"] += 1
            else:
                self.counter += 1
                self.s3.put_object(Bucket="chaos-src", Key=key, Body=f"{key} #{self.counter} {os.urandom(8).hex()}".encode())
                self.report.operations["put"] += 1

    def kill(self, instance: dg.DagsterInstance) -> None:
        """kill -9 one of the victims that exist right now (a run worker only while a run is in progress)."""
        daemon = self.procs.procs.get("daemon")
        scheduled = (
            self.settings.schedule[sum(self.report.kills.values()) % len(self.settings.schedule)] if self.settings.schedule else None
        )
        want_worker = scheduled == "run-worker" or (scheduled is None and "run-worker" in self.settings.victims and self.rng.random() < 0.4)
        deadline = time.monotonic() + 20.0
        while True:
            alive = daemon is not None and daemon.poll() is None
            servers = [pid for pid in children(daemon.pid) if b"api grpc" in cmdline(pid)] if alive and daemon else []
            workers = run_worker_pids(instance)
            present = {"daemon": alive, "daemon-group": alive, "code-server": bool(servers), "run-worker": bool(workers)}
            ready = present[scheduled] if scheduled else (bool(workers) or not want_worker)
            if ready or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # runs are short: catch one (a bounded poll) so that run workers are hit too
        if workers and want_worker:
            time.sleep(self.rng.uniform(0.0, 0.5))  # somewhere inside the run
        available = [victim for victim, here in present.items() if here and victim in self.settings.victims]
        if scheduled:
            available = [scheduled] if present[scheduled] else []
        if not available:
            return
        victim = self.rng.choice(available)
        if victim == "daemon" and daemon:
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
        elif victim == "daemon-group":
            self.procs.kill("daemon")
        elif victim == "code-server":
            _kill(servers[0])
        else:
            for pid in workers:
                _kill(pid)
        self.report.kills[victim] += 1

    def run(self) -> ChaosReport:
        self.prepare()
        # a first state before the daemon starts: the snapshot has something to do
        for _ in range(3):
            self.mutate()
        self.start_daemon()
        try:
            with dg.DagsterInstance.from_config(str(self.home)) as instance:
                for _ in range(self.settings.rounds):
                    self.mutate()
                    time.sleep(self.rng.uniform(*self.settings.pause))  # chaos timing, not a wait for a condition
                    if self.rng.random() < self.settings.kill_chance:
                        self.kill(instance)
                    if not self.procs.alive("daemon"):
                        self.procs.kill("daemon")  # what it started goes too (a supervisor restarts the unit)
                        self.start_daemon()
                    self.report.rounds += 1
                last_kill = time.monotonic()
                deadline = last_kill + self.settings.converge_timeout
                while time.monotonic() < deadline:
                    if not self.procs.alive("daemon"):
                        self.start_daemon()
                    problems = self.verify(instance, final=False)
                    if not problems:
                        self.report.seconds_to_converge = time.monotonic() - last_kill
                        break
                    time.sleep(1.0)  # poll interval of a bounded wait
                self.verify(instance, final=True)
        finally:
            self.procs.stop_all()
        return self.report

    # ------------------------------------------------------------------ verification

    def source_state(self) -> dict[str, bytes]:
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket="chaos-src"):
            for item in page.get("Contents", []):
                out[item["Key"]] = self.s3.get_object(Bucket="chaos-src", Key=item["Key"])["Body"].read()
        return out

    def records(self) -> list[dict[str, Any]]:
        """Every record in file-name order (batch order), then line order."""
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket="chaos-rec"):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        out = []
        for key in sorted(keys):
            for line in self.s3.get_object(Bucket="chaos-rec", Key=key)["Body"].read().splitlines():
                out.append(json.loads(line))
        return out

    def verify(self, instance: dg.DagsterInstance, final: bool) -> list[str]:
        source = self.source_state()
        problems: list[str] = []
        mirror = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket="chaos-dst"):
            for item in page.get("Contents", []):
                mirror[item["Key"]] = item
        lost = [k for k in source if k not in mirror]
        extra = [k for k in mirror if k not in source]
        stale = [k for k in source if k in mirror and mirror[k]["Size"] != len(source[k])]
        stale += [
            k
            for k in source
            if k in mirror and k not in stale and self.s3.get_object(Bucket="chaos-dst", Key=k)["Body"].read() != source[k]
        ]
        files = {p.relative_to(self.folder).as_posix(): p for p in self.folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")}
        lost += [f"folder:{k}" for k in source if k not in files]
        extra += [f"folder:{k}" for k in files if k not in source]
        stale += [f"folder:{k}" for k in source if k in files and files[k].read_bytes() != source[k]]
        records = self.records()
        by_version = Counter((r["Key"], base64.b64decode(r["Payload"])) for r in records if r["Operation"] != "delete")
        missing_records = [k for k, body in source.items() if by_version[(k, body)] == 0]
        duplicated = [f"{k}: {n} records" for (k, _body), n in by_version.items() if n > 1]
        last_op: dict[str, str] = {}
        for record in records:
            last_op[record["Key"]] = record["Operation"]
        missing_deletes = [k for k, op in last_op.items() if k not in source and op != "delete"]
        pending = _pending_batches(self.workdir)
        running = [
            r.run_id for r in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]))
        ]
        for label, items in (
            ("lost", lost),
            ("extra", extra),
            ("stale", stale),
            ("missing record", missing_records),
            ("duplicated record", duplicated),
            ("missing delete record", missing_deletes),
        ):
            problems.extend(f"{label}: {item}" for item in items[:10])
        if pending:
            problems.append(f"{pending} batch(es) pending")
        if running:
            problems.append(f"runs in progress: {running}")
        if final:
            self.report.lost = len(lost)
            self.report.stale = len(stale) + len(extra)
            self.report.missing_records = len(missing_records)
            self.report.duplicated_records = len(duplicated)
            self.report.missing_delete_records = len(missing_deletes)
            self.report.problems = problems
        return problems


def _pending_batches(workdir: Path) -> int:
    from ingest_pipelines.sync.ledger import SyncLedger

    ledger_file = workdir / "state" / "sync-ledger.sqlite"
    if not ledger_file.exists():
        return 0
    return len(SyncLedger(f"sqlite:///{ledger_file}").pending_batches("chaos"))


def children(pid: int) -> list[int]:
    """Every descendant of a process (from /proc), depth first."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(kids.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(kids.get(child, []))
    return out


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def run_worker_pids(instance: dg.DagsterInstance) -> list[int]:
    """The pids of the run workers of runs in progress (from their "Started process for run" events)."""
    pids = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        records = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
        for record in records:
            data = record.event_log_entry.dagster_event.engine_event_data if record.event_log_entry.dagster_event else None
            pid = (data.metadata or {}).get("pid") if data else None
            if pid is not None and "Started process for run" in (record.event_log_entry.message or ""):
                pids.append(int(str(getattr(pid, "value", pid))))
    return pids


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def clean(workdir: Path) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
