"""Real servers on loopback for tests and the demo: a moto S3 server process and a small HTTP server.

Shared by `ingest_pipelines_tests` and `ingest-pipelines demo`; nothing here patches boto3. moto itself comes
with the `demo`/`dev` extra and is only needed when a MotoServer starts (MotoNotInstalled says how to get it).
"""

from ingest_pipelines.testing.http_server import RecordedRequest, TestHTTPServer
from ingest_pipelines.testing.moto_server import MotoNotInstalled, MotoServer, free_port, moto_installed

__all__ = ["MotoNotInstalled", "MotoServer", "RecordedRequest", "TestHTTPServer", "free_port", "moto_installed"]
