"""A Pennsieve API test server to the documented contract: POST /import, GET upload-credentials, GET run.

Checks the callback-token header (401 otherwise), records requests, and plays scripted failures; tests and the demo use it.
"""

from __future__ import annotations

import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ingest_pipelines.testing.http_server import RecordedRequest, Response, TestHTTPServer

#: routes a failure can be scripted for.
ROUTES = ("import", "credentials", "run")


@dataclass
class ScriptedFailure:
    status: int
    body: Any
    headers: dict[str, str]


class PennsieveTestServer:
    """`with PennsieveTestServer(tokens={"run-1": "secret"}, bucket="pennsieve-uploads") as api:` serves `api.url`.

    Credentials handed out are plain keys (a moto server without auth accepts any); `expires_in` sets their
    `expiration` (a list is used in order, one per credentials call). `runs[runId]` is what the run lookup answers.
    """

    __test__ = False

    def __init__(
        self,
        tokens: dict[str, str],
        bucket: str = "pennsieve-uploads",
        region: str = "us-east-1",
        runs: dict[str, Any] | None = None,
        expires_in: float | list[float] = 3600.0,
    ):
        self.tokens = dict(tokens)
        self.bucket = bucket
        self.region = region
        self.runs: dict[str, Any] = dict(runs or {})
        self.expires_in = expires_in
        self.imports: dict[str, dict[str, Any]] = {}
        self._credentials_served = 0
        self._failures: dict[str, deque[ScriptedFailure]] = {route: deque() for route in ROUTES}
        self._lock = threading.Lock()
        self.http = TestHTTPServer(self.handle)

    # ------------------------------------------------------------------ control

    @property
    def url(self) -> str:
        return self.http.url

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.http.requests

    def fail(self, route: str, status: int, times: int = 1, body: Any = None, headers: dict[str, str] | None = None) -> None:
        """The next `times` calls of `route` (import | credentials | run) answer `status` instead."""
        if route not in ROUTES:
            raise ValueError(f"unknown route {route!r} (known: {', '.join(ROUTES)})")
        failure = ScriptedFailure(status, body if body is not None else {"message": f"scripted failure {status}"}, headers or {})
        with self._lock:
            self._failures[route].extend([failure] * times)

    def calls(self, route: str) -> list[RecordedRequest]:
        """Recorded requests of one route (including the rejected ones)."""
        return [request for request in self.requests if self._route(request)[0] == route]

    def start(self) -> PennsieveTestServer:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def __enter__(self) -> PennsieveTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the API

    @staticmethod
    def _route(request: RecordedRequest) -> tuple[str | None, list[str]]:
        parts = [part for part in request.path.split("/") if part]
        if request.method == "POST" and parts == ["import"]:
            return "import", parts
        if request.method == "GET" and len(parts) == 3 and parts[0] == "import" and parts[2] == "upload-credentials":
            return "credentials", parts
        if request.method == "GET" and len(parts) == 4 and parts[:3] == ["compute", "workflows", "runs"]:
            return "run", parts
        return None, parts

    def _authorized(self, request: RecordedRequest) -> bool:
        header = request.headers.get("Authorization", "")
        prefix = "Callback workflow-service:"
        if not header.startswith(prefix):
            return False
        run_id, _, token = header[len(prefix) :].partition(":")
        return bool(token) and self.tokens.get(run_id) == token

    def handle(self, request: RecordedRequest) -> Response:
        route, parts = self._route(request)
        if route is None:
            return Response(404, {"message": f"no route {request.method} {request.path}"})
        if not self._authorized(request):
            return Response(401, {"message": "Unauthorized"})
        with self._lock:
            failure = self._failures[route].popleft() if self._failures[route] else None
        if failure is not None:
            return Response(failure.status, failure.body, failure.headers)
        if route == "import":
            return self._create_import(request)
        if route == "credentials":
            return self._credentials(request, parts[1])
        return self._run(parts[3])

    def _create_import(self, request: RecordedRequest) -> Response:
        dataset = request.query.get("dataset_id", [""])[0]
        if not dataset:
            return Response(400, {"message": "dataset_id is required"})
        try:
            body = request.json()
        except ValueError:
            return Response(400, {"message": "body is not JSON"})
        problems = [name for name in ("integration_id", "package_id", "import_type", "files", "options") if not body.get(name)]
        files = body.get("files") or []
        if any(not isinstance(f, dict) or not f.get("upload_key") or not f.get("file_path") for f in files):
            problems.append("files[].upload_key/file_path")
        if problems:
            return Response(400, {"message": f"missing or empty: {', '.join(problems)}"})
        import_id = str(uuid.uuid4())
        with self._lock:
            self.imports[import_id] = {"dataset_id": dataset, **body}
        return Response(201, {"id": import_id})

    def _credentials(self, request: RecordedRequest, import_id: str) -> Response:
        if import_id not in self.imports:
            return Response(404, {"message": f"no import {import_id}"})
        if request.query.get("dataset_id", [""])[0] != self.imports[import_id]["dataset_id"]:
            return Response(403, {"message": "import belongs to another dataset"})
        with self._lock:
            index = self._credentials_served
            self._credentials_served += 1
        expires = self.expires_in[min(index, len(self.expires_in) - 1)] if isinstance(self.expires_in, list) else self.expires_in
        expiration = (datetime.now(UTC) + timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return Response(
            200,
            {
                "accessKeyId": f"ASIATEST{index:08d}",
                "secretAccessKey": "test-secret",
                "sessionToken": f"session-{import_id}-{index}",
                "expiration": expiration,
                "bucket": self.bucket,
                "region": self.region,
            },
        )

    def _run(self, run_id: str) -> Response:
        if run_id not in self.runs:
            return Response(404, {"message": f"no execution run {run_id}"})
        return Response(200, self.runs[run_id])


def run_with_packages(run_id: str, dataset_id: str, *package_lists: list[str]) -> dict[str, Any]:
    """A run lookup answer with one data source per package list (`dataSources` keyed by data-source id)."""
    return {
        "uuid": run_id,
        "datasetId": dataset_id,
        "dataSources": {f"source-{i}": {"packageIds": packages, "path": f"/data/{i}"} for i, packages in enumerate(package_lists, 1)},
    }
