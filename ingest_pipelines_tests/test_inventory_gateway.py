"""The gateway client against the fake gateway over HTTP: retries, Retry-After, bounded attempts, rate limit."""

from __future__ import annotations

import base64
import time

from ingest_pipelines.inventory.config import GatewayConfig
from ingest_pipelines.inventory.gateway import GatewayClient, RateLimiter, retry_after_seconds
from ingest_pipelines.testing.gateway import GatewayServer
from ingest_pipelines_tests import inventory_fixtures

# fixtures shared by the inventory test modules
gateway = inventory_fixtures.gateway


def client(gateway: GatewayServer, **options: object) -> GatewayClient:
    return GatewayClient(GatewayConfig(url=gateway.url, **{"ratePerSecond": 500, "backoff": 0.01, "maxBackoff": 0.05, **options}))


def test_register_sends_user_properties_and_base64_image(gateway: GatewayServer) -> None:
    result = client(gateway).register("fred", {"fname": "Fred"}, b"\x89PNG", idempotency_key="images/a.png@etag")
    assert result.ok and result.attempts == 1 and result.status == 200
    (body,) = gateway.registrations
    assert body["UserId"] == "fred" and body["Properties"] == {"fname": "Fred"}
    assert base64.b64decode(body["Image"]) == b"\x89PNG"
    assert gateway.server.requests[0].headers["Idempotency-Key"] == "images/a.png@etag"


def test_500_twice_then_200_is_one_success_after_three_attempts(gateway: GatewayServer) -> None:
    gateway.script([500, 500, 200])
    result = client(gateway).register("fred", {}, b"x", "k")
    assert result.ok and result.attempts == 3
    assert len(gateway.calls) == 3 and len(gateway.registrations) == 1


def test_always_500_fails_after_max_attempts(gateway: GatewayServer) -> None:
    gateway.always(500)
    result = client(gateway, maxAttempts=4).register("fred", {}, b"x", "k")
    assert not result.ok and result.attempts == 4 and result.status == 500 and result.error_code == "HTTP500"
    assert len(gateway.calls) == 4


def test_non_retryable_4xx_fails_at_once(gateway: GatewayServer) -> None:
    gateway.script([403])
    result = client(gateway).register("fred", {}, b"x", "k")
    assert not result.ok and result.attempts == 1 and result.status == 403


def test_429_retry_after_is_honoured(gateway: GatewayServer) -> None:
    gateway.script([(429, {"Retry-After": "1"}), (503, {"Retry-After": "0"})])
    started = time.monotonic()
    result = client(gateway, maxBackoff=5).register("fred", {}, b"x", "k")
    assert result.ok and result.attempts == 3
    # the gateway asked for one second; waiting less would ignore it
    assert time.monotonic() - started >= 1.0


def test_connection_refused_is_a_failure_not_an_exception() -> None:
    config = GatewayConfig(url="http://127.0.0.1:9", ratePerSecond=500, backoff=0.01, maxAttempts=2, timeout=2)
    result = GatewayClient(config).register("fred", {}, b"x", "k")
    assert not result.ok and result.attempts == 2 and result.status is None and "ConnectionError" in result.response


def test_rate_limiter_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(4, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.acquire()
    assert now[0] == 1.0 and slept == [0.25, 0.25, 0.25, 0.25]
    limiter.hold(2.0)
    limiter.acquire()
    assert now[0] == 3.0


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_api_key_is_a_secret_sent_as_header(gateway: GatewayServer, monkeypatch) -> None:
    monkeypatch.setenv("GATEWAY_KEY", "very-secret-key")
    config = GatewayConfig(url=gateway.url, apiKey="$GATEWAY_KEY")
    assert "very-secret-key" not in repr(config)
    assert GatewayClient(config).register("fred", {}, b"x", "k").ok
    assert gateway.server.requests[0].headers["x-api-key"] == "very-secret-key"
