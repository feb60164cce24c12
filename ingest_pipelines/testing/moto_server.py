"""A moto S3 (and SQS/STS) server as a subprocess on 127.0.0.1 and a free port.

A subprocess, not a thread: the server must not share the GIL with the code under test or measurement.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class MotoNotInstalled(RuntimeError):
    """moto is in the `demo` (and `dev`) extra, not in a plain `pip install ingest_pipelines`."""

    def __init__(self) -> None:
        super().__init__(
            "the local S3 server needs moto, which a plain install leaves out: "
            "pip install 'ingest_pipelines[demo]' (in a checkout: `make demo`, or pip install -e '.[demo]')"
        )


def moto_installed() -> bool:
    return importlib.util.find_spec("moto") is not None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    """`with MotoServer() as server:` starts `moto_server` and waits until it answers."""

    def __init__(self, port: int | None = None, log_path: str | os.PathLike[str] | None = None, host: str = "127.0.0.1"):
        self.host = host
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The server process's command line (a subclass may serve a prepared backend instead)."""
        return [sys.executable, "-c", "from moto.server import main; main()", "-H", self.host, "-p", str(self.port)]

    def start(self, timeout: float = 30.0) -> MotoServer:
        if not moto_installed():
            raise MotoNotInstalled()
        env = {**os.environ, **TEST_CREDENTIALS}
        env.pop("AWS_CA_BUNDLE", None)
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint_url} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def reset(self) -> None:
        """Forget every bucket, queue and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def client(self, service: str = "s3", **kwargs: Any) -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
            **kwargs,
        )

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
