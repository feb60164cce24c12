"""A fake indexing gateway on loopback: POST /register {UserId, Properties, Image}, recorded, with
scriptable answers per call or per UserId (e.g. [500, 500, 200], or 429 with Retry-After)."""

from __future__ import annotations

import base64
import binascii
import threading
from collections import deque
from typing import Any

from ingest_pipelines.testing.http_server import RecordedRequest, Response, TestHTTPServer

#: a scripted answer: a status, or (status, headers)
Answer = int | tuple[int, dict[str, str]]


class GatewayServer:
    """`with GatewayServer() as gateway:` then point `gateway.url` at it; `gateway.registrations`
    holds the accepted {UserId, Properties, Image} bodies, `gateway.calls` every /register body."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._lock = threading.Lock()
        self._queues: dict[str | None, deque[Answer]] = {}
        self._always: dict[str | None, Answer] = {}
        self.calls: list[dict[str, Any]] = []
        self.registrations: list[dict[str, Any]] = []
        self.server = TestHTTPServer(self._handle, host=host, port=port)

    @property
    def url(self) -> str:
        return self.server.url

    def script(self, answers: list[Answer], user_id: str | None = None) -> None:
        """Answer the next calls (for `user_id`, or any call) with these, then normally."""
        with self._lock:
            self._queues.setdefault(user_id, deque()).extend(answers)

    def always(self, answer: Answer, user_id: str | None = None) -> None:
        with self._lock:
            self._always[user_id] = answer

    def calls_for(self, user_id: str) -> list[dict[str, Any]]:
        return [call for call in self.calls if call.get("UserId") == user_id]

    def _next_answer(self, user_id: str | None) -> Answer | None:
        with self._lock:
            for who in (user_id, None):
                queue = self._queues.get(who)
                if queue:
                    return queue.popleft()
            for who in (user_id, None):
                if who in self._always:
                    return self._always[who]
        return None

    def _handle(self, request: RecordedRequest) -> Response:
        if request.method != "POST" or request.path.rstrip("/") != "/register":
            return Response(404, {"error": f"no route {request.method} {request.path}"})
        try:
            body = request.json()
            user_id = body["UserId"]
            properties = body["Properties"]
            base64.b64decode(body["Image"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            return Response(400, {"error": f"bad request: {exc}"})
        if not isinstance(user_id, str) or not isinstance(properties, dict):
            return Response(400, {"error": "UserId must be a string and Properties an object"})
        with self._lock:
            self.calls.append(body)
        answer = self._next_answer(user_id)
        status, headers = (answer, {}) if isinstance(answer, int) else (answer or (200, {}))
        if 200 <= status < 300:
            with self._lock:
                self.registrations.append(body)
            return Response(status, {"status": "indexed", "UserId": user_id}, headers)
        return Response(status, {"error": f"scripted failure {status}"}, headers)

    def start(self) -> GatewayServer:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
