"""HTTP calls of the `http` source: one session, retries on 408/425/429/5xx and connection errors with
`Retry-After` or exponential backoff, inside a total wait budget per request.

A persistent failure raises PluginError naming the source, the method, the URL and the last status.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from ingest_pipelines.plugins.protocols import PluginError

log = logging.getLogger(__name__)

#: statuses worth another attempt (throttling, a server or proxy in trouble).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: the longest single backoff wait without a Retry-After.
MAX_BACKOFF = 30.0


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_seconds(attempt: int) -> float:
    """0.5 s, 1 s, 2 s, 4 s ... for attempt 1, 2, 3 ..., at most MAX_BACKOFF."""
    return min(MAX_BACKOFF, 0.5 * 2 ** (attempt - 1))


class HttpClient:
    """Requests with retries; the auth header is set on the session and never appears in a message."""

    def __init__(
        self,
        name: str,
        headers: Mapping[str, str],
        timeout: float,
        retries: int,
        retry_budget: float,
        *,
        pool: int = 32,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.name = name
        self.timeout = timeout
        self.retries = retries
        self.retry_budget = retry_budget
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers.update(headers)
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def request(self, method: str, url: str, *, params: Mapping[str, Any] | None = None, stream: bool = False) -> requests.Response:
        """The first answer that is not retryable (the caller judges its status), or PluginError when retries or
        the budget run out. No attempt starts after `retry_budget` seconds (waits and attempts together), so a
        call takes at most about retry_budget + timeout: what keeps a sensor tick under Dagster's 60 s."""
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(method, url, params=params, timeout=self.timeout, stream=stream)
            except (requests.ConnectionError, requests.Timeout) as exc:
                failure = f"{type(exc).__name__}: {exc}"
                wait = backoff_seconds(attempt)
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                failure = f"HTTP {response.status_code}{error_snippet(response)}"
                hinted = retry_after_seconds(response.headers.get("Retry-After"))
                wait = hinted if hinted is not None else backoff_seconds(attempt)
                response.close()
            if attempt > self.retries:
                raise PluginError(f"{self.name}: {method} {_clean(url)}: {failure} after {attempt} attempt(s)")
            if time.monotonic() - started + wait > self.retry_budget:
                raise PluginError(
                    f"{self.name}: {method} {_clean(url)}: {failure}; waiting {wait:g}s more would pass retryBudget "
                    f"({self.retry_budget:g}s) after {attempt} attempt(s)"
                )
            log.info("%s: %s %s: %s; attempt %d in %.1fs", self.name, method, _clean(url), failure, attempt + 1, wait)
            self.sleep(wait)

    def close(self) -> None:
        self.session.close()


def _clean(url: str) -> str:
    """A URL for messages: without user info."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def error_snippet(response: requests.Response) -> str:
    """The start of an error answer's text (APIs explain themselves there), for the message."""
    if not response.headers.get("Content-Type", "").startswith(("application/json", "text/", "application/problem")):
        return ""
    try:
        text = response.text[:200].strip()
    except Exception:  # an unreadable body is not worth a second failure
        return ""
    return f" ({text})" if text else ""
