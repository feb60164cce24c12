"""Helpers for the pennsieve tests: constants, the upload bucket's content, and an S3 proxy that lets the
first N uploads through and then blocks or rejects (to crash an upload midway)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

RUN_ID = "run-0001"
TOKEN = "callback-token-s3cr3t"
DATASET = "N:dataset:1111"
PACKAGE = "N:package:2222"
UPLOAD_BUCKET = "pennsieve-uploads"


def uploaded(s3: Any, prefix: str = "") -> dict[str, bytes]:
    """Every object in the upload bucket: key -> bytes."""
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=UPLOAD_BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = s3.get_object(Bucket=UPLOAD_BUCKET, Key=item["Key"])["Body"].read()
    return out


class S3Proxy:
    """An HTTP proxy in front of the moto server that counts object PUTs; after `allow` of them, further
    PUTs either block until released (`mode="block"`, the client is then killed) or get 403 (`mode="reject"`)."""

    def __init__(self, upstream: str, allow: int | None = None, mode: str = "block"):
        self.upstream = urlsplit(upstream)
        self.allow = allow
        self.mode = mode
        self.puts: list[str] = []
        self.blocked = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    raw = b""
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        size = int(line.split(b";")[0].strip(), 16)
                        chunk = self.rfile.read(size + 2)
                        raw += chunk
                        if size == 0:
                            # trailers end with an empty line
                            if chunk != b"\r\n":
                                while True:
                                    trailer = self.rfile.readline()
                                    raw += trailer
                                    if trailer in (b"\r\n", b""):
                                        break
                            return raw
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                # an object is complete after a PutObject or a CompleteMultipartUpload (parts are not counted)
                is_put = (self.command == "PUT" and "uploadId=" not in self.path) or (self.command == "POST" and "uploadId=" in self.path)
                if is_put:
                    with outer._lock:
                        over = outer.allow is not None and len(outer.puts) >= outer.allow
                        if not over:
                            outer.puts.append(urlsplit(self.path).path)
                    if over and outer.mode == "block":
                        outer.blocked.set()
                        outer.release.wait(120)
                        self.close_connection = True
                        return
                    if over:
                        payload = b"<Error><Code>AccessDenied</Code><Message>proxy rejects</Message></Error>"
                        self.send_response(403)
                        self.send_header("Content-Type", "application/xml")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                conn = http.client.HTTPConnection(outer.upstream.hostname, outer.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in {"expect", "connection"}}
                conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() in {"transfer-encoding", "connection"} or (key.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> S3Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
