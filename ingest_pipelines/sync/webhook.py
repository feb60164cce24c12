"""The connylabs webhook: after each batch, POST the JSON array of destination URIs it stored.

Retries with exponential backoff (honouring Retry-After); `Idempotency-Key: <batch id>` lets the receiver drop repeats.
"""

from __future__ import annotations

import time

import requests


class WebhookError(RuntimeError):
    """The webhook refused the call or never answered; the message names the URL, batch and status."""


RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def post_uris(
    url: str,
    uris: list[str],
    idempotency_key: str,
    *,
    attempts: int = 5,
    backoff: float = 0.5,
    max_wait: float = 30.0,
    timeout: float = 10.0,
    session: requests.Session | None = None,
) -> int:
    """POST `uris` as JSON; returns the final 2xx status, raises WebhookError otherwise."""
    http = session or requests.Session()
    last = ""
    for attempt in range(attempts):
        wait = min(max_wait, backoff * (2**attempt))
        try:
            resp = http.post(url, json=uris, headers={"Idempotency-Key": idempotency_key}, timeout=timeout)
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= resp.status_code < 300:
                return resp.status_code
            last = f"HTTP {resp.status_code}"
            if resp.status_code not in RETRY_STATUSES:
                raise WebhookError(f"webhook {url}: batch {idempotency_key}: refused with {last}")
            retry_after = resp.headers.get("Retry-After")
            if retry_after and retry_after.isdigit():
                wait = min(max_wait, float(retry_after))
        if attempt + 1 < attempts:
            time.sleep(wait)
    raise WebhookError(f"webhook {url}: batch {idempotency_key}: no success after {attempts} attempts (last: {last})")
