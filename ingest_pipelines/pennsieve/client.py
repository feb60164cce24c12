"""The Pennsieve API calls the target makes: create an import, get its upload credentials, look up a run.

Callback-token auth; non-2xx is a PennsieveError with status and body; 429/5xx and connection errors retried with backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "default"


class PennsieveError(RuntimeError):
    """A Pennsieve API call or an import failed; the message names the call (or item) and the reason."""

    def __init__(self, message: str, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a call that failed with 429/5xx or a connection error."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0
    timeout: tuple[float, float] = (10.0, 60.0)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with jitter; a server's Retry-After wins when it asks for longer."""
        backoff = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        backoff *= 0.5 + random.random() / 2
        if retry_after is not None:
            return min(self.max_delay, max(backoff, retry_after))
        return backoff


@dataclass(frozen=True)
class UploadCredentials:
    """Temporary S3 credentials scoped to `s3://{bucket}/{importId}/`; `expiration` is the server's ISO time."""

    access_key_id: str
    secret_access_key: str
    session_token: str | None
    expiration: str | None
    bucket: str
    region: str | None

    def __repr__(self) -> str:
        return f"UploadCredentials(bucket={self.bucket!r}, region={self.region!r}, expiration={self.expiration!r})"

    @classmethod
    def from_response(cls, data: Any) -> UploadCredentials:
        if not isinstance(data, dict):
            raise PennsieveError(f"upload-credentials: expected a JSON object, got {type(data).__name__}")
        missing = [key for key in ("accessKeyId", "secretAccessKey", "bucket") if not data.get(key)]
        if missing:
            raise PennsieveError(f"upload-credentials: answer lacks {', '.join(missing)}")
        return cls(
            access_key_id=str(data["accessKeyId"]),
            secret_access_key=str(data["secretAccessKey"]),
            session_token=data.get("sessionToken") or None,
            expiration=data.get("expiration") or None,
            bucket=str(data["bucket"]),
            region=data.get("region") or None,
        )


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def package_from_run(run: Any, run_id: str) -> str:
    """The one package id of a run's one data source (the seed's rules and messages)."""
    sources = run.get("dataSources") if isinstance(run, dict) else None
    if not sources:
        raise PennsieveError(f"execution run {run_id}: execution run has no data sources")
    if not isinstance(sources, dict):
        raise PennsieveError(f"execution run {run_id}: dataSources must be an object keyed by data-source id")
    if len(sources) != 1:
        raise PennsieveError(f"execution run {run_id}: execution run has {len(sources)} data sources, expected 1")
    source_id, source = next(iter(sources.items()))
    packages = source.get("packageIds") if isinstance(source, dict) else None
    if not packages:
        raise PennsieveError(f"execution run {run_id}: data source has no package IDs (data source {source_id})")
    if len(packages) != 1:
        raise PennsieveError(f"execution run {run_id}: data source has {len(packages)} packages, expected 1 (data source {source_id})")
    return str(packages[0])


class PennsieveClient:
    """One API host, one execution run's callback token; a requests Session reused across calls."""

    def __init__(
        self,
        api_host: str,
        execution_run_id: str,
        callback_token: str,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_host = api_host.rstrip("/")
        self.execution_run_id = execution_run_id
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Callback workflow-service:{execution_run_id}:{callback_token}"
        self._session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"PennsieveClient({self.api_host}, run {self.execution_run_id})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> PennsieveClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, params: dict[str, str] | None = None, body: Any = None) -> Any:
        """One call with bounded retries; returns the decoded JSON (None for an empty body)."""
        url = self.api_host + path
        what = f"{method} {path}"
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._session.request(method, url, params=params, json=body, timeout=self.retry.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt >= self.retry.max_attempts:
                    raise PennsieveError(f"{what}: {type(exc).__name__} after {attempt} attempts: {exc}") from exc
                delay = self.retry.delay(attempt)
                log.warning("%s: %s; retrying in %.1fs (attempt %d/%d)", what, type(exc).__name__, delay, attempt, self.retry.max_attempts)
                self._sleep(delay)
                continue
            status = response.status_code
            if 200 <= status < 300:
                if not response.content:
                    return None
                try:
                    return response.json()
                except ValueError as exc:
                    raise PennsieveError(f"{what}: HTTP {status} with a body that is not JSON: {response.text[:200]!r}", status) from exc
            text = response.text[:1000]
            if (status == 429 or status >= 500) and attempt < self.retry.max_attempts:
                delay = self.retry.delay(attempt, _retry_after(response))
                log.warning("%s: HTTP %d; retrying in %.1fs (attempt %d/%d)", what, status, delay, attempt, self.retry.max_attempts)
                self._sleep(delay)
                continue
            raise PennsieveError(f"{what}: HTTP {status}: {text}", status=status, body=text)

    def create_import(
        self,
        dataset_id: str,
        package_id: str,
        import_type: str,
        files: list[dict[str, str]],
        options: dict[str, Any],
    ) -> str:
        """POST /import?dataset_id=...; returns the import id."""
        body = {
            "integration_id": self.execution_run_id,
            "package_id": package_id,
            "import_type": import_type,
            "files": files,
            "options": options,
        }
        data = self._call("POST", "/import", params={"dataset_id": dataset_id}, body=body)
        import_id = (data.get("id") or data.get("importId")) if isinstance(data, dict) else None
        if not import_id:
            raise PennsieveError(f"POST /import: answer has no import id: {str(data)[:200]}")
        return str(import_id)

    def upload_credentials(self, import_id: str, dataset_id: str) -> UploadCredentials:
        """GET /import/{importId}/upload-credentials?dataset_id=..."""
        data = self._call("GET", f"/import/{import_id}/upload-credentials", params={"dataset_id": dataset_id})
        return UploadCredentials.from_response(data)

    def get_run(self, run_id: str | None = None) -> Any:
        """GET /compute/workflows/runs/{runId}."""
        return self._call("GET", f"/compute/workflows/runs/{run_id or self.execution_run_id}")

    def resolve_package(self, package_id: str) -> str:
        """PACKAGE_ID as given, or for "default" the one package of the run's one data source."""
        if package_id != DEFAULT_PACKAGE:
            return package_id
        return package_from_run(self.get_run(), self.execution_run_id)
