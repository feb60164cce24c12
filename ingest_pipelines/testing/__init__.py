"""Real servers on loopback for tests and the demo: a moto S3 server process and a small HTTP server.

Shared by `ingest_pipelines_tests` and `ingest-pipelines demo`; nothing here patches boto3.
"""

from ingest_pipelines.testing.http_server import RecordedRequest, TestHTTPServer
from ingest_pipelines.testing.moto_server import MotoServer, free_port

__all__ = ["MotoServer", "RecordedRequest", "TestHTTPServer", "free_port"]
