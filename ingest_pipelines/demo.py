"""`ingest-pipelines demo`: a local S3 server, sample data and a config for every workflow kind, then `dagster dev`.

Each kind contributes through `ingest_pipelines.<kind>.demo.seed(ctx) -> {"sources", "destinations", "workflows"}`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS

log = logging.getLogger(__name__)

#: modules whose `seed(ctx)` adds sample data and workflows (skipped when not present).
DEMO_MODULES = (
    "ingest_pipelines.sync.demo",
    "ingest_pipelines.inventory.demo",
    "ingest_pipelines.bundles.demo",
    "ingest_pipelines.pennsieve.demo",
)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: the code location: module and name, as in the project's workspace.yaml
MODULE = "ingest_pipelines.definitions"
LOCATION_NAME = "ingest_pipelines"


@dataclass
class DemoContext:
    """What a kind's `seed` gets: the S3 server, a work folder, and places to register what it starts."""

    endpoint_url: str
    s3: Any
    workdir: Path
    #: context managers / objects with .stop() to close when the demo ends
    servers: list[Any] = field(default_factory=list)
    #: extra environment for `dagster dev` (e.g. tokens referenced as $VAR in the config)
    env: dict[str, str] = field(default_factory=dict)

    def s3_source(self, name: str, bucket: str, prefix: str = "", **extra: Any) -> dict[str, Any]:
        """A source/destination entry on the demo server, credentials as $VAR."""
        self.s3.create_bucket(Bucket=bucket) if not _bucket_exists(self.s3, bucket) else None
        return {
            "name": name,
            "type": "s3",
            "endpoint": self.endpoint_url,
            "region": "us-east-1",
            "bucket": bucket,
            "prefix": prefix,
            "accessKeyID": "$AWS_ACCESS_KEY_ID",
            "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
            **extra,
        }


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
        return True
    except Exception:
        return False


def build_demo(ctx: DemoContext) -> dict[str, Any]:
    """Seed every kind that exists and return the merged config document."""
    document: dict[str, Any] = {"sources": [], "destinations": [], "workflows": []}
    for module in DEMO_MODULES:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or importlib.util.find_spec(module) is None:
            continue
        part = importlib.import_module(module).seed(ctx)
        for key in document:
            document[key].extend(part.get(key, []))
    document["state"] = {"type": "filesystem", "path": str(ctx.workdir / "state")}
    return document


#: the demo's instance only (not dagster.yaml): no newsletter modal in the UI, and the terminal shows INFO and up
#: (the DEBUG line per run event, STEP_START and the like, stays in the UI's run log: events are stored at any level).
DEMO_INSTANCE = {
    "nux": "nux:\n  enabled: false\n",
    "python_logs": "python_logs:\n  python_log_level: INFO\n",
}

#: `dagster dev` is superseded by `dg dev`, which a plain install (and the demo extra) does not bring; the demo
#: starts `dagster dev` on purpose, so its process alone ignores that one warning.
DEV_SUPERSEDED_WARNING = "ignore:Function `dev_command` is superseded"


def _instance_yaml() -> str:
    text = "telemetry:\n  enabled: false\n"
    for candidate in (Path.cwd() / "dagster.yaml", REPO_ROOT / "dagster.yaml"):
        if candidate.is_file():
            text = candidate.read_text()
            break
    present = yaml.safe_load(text) or {}
    extra = [block for key, block in DEMO_INSTANCE.items() if key not in present]
    if not extra:
        return text
    return text.rstrip("\n") + "\n\n# added by `ingest-pipelines demo`\n" + "".join(extra)


def _wait_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except Exception:
            time.sleep(0.5)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_demo(args: argparse.Namespace) -> int:
    # Ctrl-C and `kill` both stop everything the demo started (a shell may start us with SIGINT
    # ignored, and SIGTERM's default would orphan dagster dev and the S3 server).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(args.dir).resolve()
    if args.fresh and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dagster_home = workdir / "dagster_home"
    dagster_home.mkdir(exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(_instance_yaml())

    env = {**os.environ, **TEST_CREDENTIALS}
    env.pop("AWS_CA_BUNDLE", None)
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(MotoServer(port=args.s3_port or None, log_path=workdir / "moto.log"))
        log.info("local S3 (moto) on %s", server.endpoint_url)
        ctx = DemoContext(endpoint_url=server.endpoint_url, s3=server.client("s3"), workdir=workdir)
        try:
            document = build_demo(ctx)
        finally:
            for started in ctx.servers:
                stack.callback(started.stop)
        config_path = workdir / "ingest.yaml"
        config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        log.info("demo config written to %s (%d workflows)", config_path, len(document["workflows"]))
        env.update(ctx.env)
        env.update({"DAGSTER_HOME": str(dagster_home), "INGEST_CONFIG": str(config_path), "AWS_ENDPOINT_URL_S3": server.endpoint_url})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        if args.setup_only:
            print(config_path)
            return 0
        # the code location has the one name every process uses (workspace.yaml, [tool.dagster], [tool.dg], serve)
        workspace = workdir / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {"module_name": MODULE, "location_name": LOCATION_NAME}}]}))
        command = [sys.executable, "-W", DEV_SUPERSEDED_WARNING, "-m", "dagster", "dev", "-w", str(workspace)]
        command += ["-h", args.host, "-p", str(args.port)]
        log.info("starting: %s", " ".join(command))
        dev = subprocess.Popen(command, env=env, cwd=workdir, start_new_session=True)

        def stop_dev() -> None:
            if dev.poll() is None:
                os.killpg(dev.pid, signal.SIGINT)
                try:
                    dev.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(dev.pid, signal.SIGKILL)
                    dev.wait()

        stack.callback(stop_dev)
        try:
            if _wait_http(f"http://{args.host}:{args.port}/server_info", timeout=180, process=dev):
                log.info("Dagster UI: http://%s:%s  (Ctrl-C stops everything)", args.host, args.port)
            return dev.wait()
        except KeyboardInterrupt:
            log.info("stopping the demo (Dagster, then the S3 server and the fake APIs)")
            return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="local S3 + sample data + dagster dev, no AWS account needed")
    parser.add_argument("--dir", default=".demo", help="work folder for the config, state and DAGSTER_HOME (default .demo)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    parser.add_argument("--s3-port", type=int, default=0, help="local S3 port (default: a free one)")
    parser.add_argument("--fresh", action="store_true", help="delete the work folder first")
    parser.add_argument("--setup-only", action="store_true", help="seed data and write the config, then exit")
    parser.set_defaults(func=run_demo)
