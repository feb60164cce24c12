"""The indexing gateway client: POST {url}/register with {UserId, Properties, Image}, rate-limited,
retrying 429/503/5xx with Retry-After and backoff for a bounded number of attempts."""

from __future__ import annotations

import base64
import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from ingest_pipelines.inventory.config import GatewayConfig

RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_RESPONSE_CHARS = 2000


class RateLimiter:
    """Spaces calls `1/rate` seconds apart across threads; `hold` delays every caller (Retry-After)."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next = clock()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def hold(self, seconds: float) -> None:
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: an integer or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class GatewayResult:
    ok: bool
    attempts: int
    status: int | None
    #: the gateway's answer (truncated) or the transport error
    response: str

    @property
    def error_code(self) -> str:
        return "" if self.ok else (f"HTTP{self.status}" if self.status else "ConnectionError")


class GatewayClient:
    """One client per run; thread-safe (requests.Session per thread is not needed for plain POSTs)."""

    def __init__(self, config: GatewayConfig, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.sleep = sleep
        self.limiter = RateLimiter(config.ratePerSecond, sleep=sleep)
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(4, config.concurrency * 2))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def _headers(self, idempotency_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        api_key = self.config.apiKey.reveal() if self.config.apiKey else None
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def register(self, user_id: str, properties: dict[str, str], image: bytes, idempotency_key: str) -> GatewayResult:
        """Index one face image. A non-2xx answer is a failure; retryable ones are retried up to maxAttempts."""
        body = {"UserId": user_id, "Properties": properties, "Image": base64.b64encode(image).decode("ascii")}
        url = f"{self.config.url}/register"
        status: int | None = None
        text = ""
        for attempt in range(1, self.config.maxAttempts + 1):
            self.limiter.acquire()
            delay = min(self.config.maxBackoff, self.config.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.post(url, json=body, headers=self._headers(idempotency_key), timeout=self.config.timeout)
            except requests.RequestException as exc:
                status, text = None, f"{type(exc).__name__}: {exc}"
            else:
                status, text = response.status_code, response.text[:MAX_RESPONSE_CHARS]
                if 200 <= status < 300:
                    return GatewayResult(True, attempt, status, text)
                if status not in RETRYABLE:
                    return GatewayResult(False, attempt, status, text)
                asked = retry_after_seconds(response.headers.get("Retry-After"))
                if asked is not None:
                    delay = min(self.config.maxBackoff, max(asked, delay if status not in (429, 503) else 0.0))
                    # the gateway asked every caller to slow down, not just this object
                    self.limiter.hold(delay)
            if attempt < self.config.maxAttempts:
                self.sleep(delay)
        return GatewayResult(False, self.config.maxAttempts, status, text)
