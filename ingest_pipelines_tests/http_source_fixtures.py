"""An HTTP JSON API of elements on loopback for the `http` source tests: a paged list (page number, cursor and
next link all offered in one answer), downloads, DELETE, bearer auth, and injected 429s and 500s.

The list is not sorted by id (it is ordered by a hash of the id), as many APIs are.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

from ingest_pipelines.testing import RecordedRequest, TestHTTPServer
from ingest_pipelines.testing.http_server import Response


@dataclass
class StoredElement:
    id: str
    body: bytes
    content_type: str
    revision: int
    updated_at: float

    @property
    def version(self) -> str:
        return f"rev-{self.revision}"


def _order(element_id: str) -> str:
    return hashlib.sha1(element_id.encode()).hexdigest()


class ElementsAPI:
    """`GET /items` (page/per_page, cursor, or the links in the answer), `GET /items/{id}/content`,
    `DELETE /items/{id}`; every call needs `Authorization: Bearer <token>`."""

    def __init__(self, token: str = "s3cr3t-token", page_size: int = 3):
        self.token = token
        self.page_size = page_size
        self.elements: dict[str, StoredElement] = {}
        self.lock = threading.Lock()
        #: the next N list calls answer 429 with this Retry-After.
        self.throttle_lists = 0
        self.retry_after = "1"
        #: element id -> how many more downloads answer 500.
        self.failing_downloads: dict[str, int] = {}
        self.server: TestHTTPServer | None = None

    # ------------------------------------------------------------------ data

    def put(self, element_id: str, body: bytes, content_type: str = "text/plain") -> StoredElement:
        with self.lock:
            old = self.elements.get(element_id)
            element = StoredElement(element_id, body, content_type, (old.revision + 1) if old else 1, time.time())
            self.elements[element_id] = element
            return element

    def remove(self, element_id: str) -> None:
        with self.lock:
            del self.elements[element_id]

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return {e.id: e.body for e in self.elements.values()}

    def _listing(self) -> list[StoredElement]:
        with self.lock:
            return sorted(self.elements.values(), key=lambda e: _order(e.id))

    @staticmethod
    def entry(element: StoredElement) -> dict[str, Any]:
        return {
            "id": element.id,
            "revision": element.version,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(element.updated_at)),
            "size": len(element.body),
            "mime": element.content_type,
        }

    # ------------------------------------------------------------------ HTTP

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def requests(self, method: str, prefix: str = "/") -> list[RecordedRequest]:
        assert self.server is not None
        return [r for r in self.server.requests if r.method == method and r.path.startswith(prefix)]

    def handle(self, request: RecordedRequest) -> Response:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response(401, {"error": "missing or wrong bearer token"})
        parts = [unquote(p) for p in request.path.split("/") if p]
        if request.method == "GET" and parts == ["items"]:
            return self._list(request)
        if len(parts) >= 2 and parts[0] == "items":
            element_id = "/".join(parts[1:-1]) if parts[-1] == "content" else "/".join(parts[1:])
            if request.method == "GET" and parts[-1] == "content":
                return self._download(element_id)
            if request.method == "DELETE":
                with self.lock:
                    gone = self.elements.pop(element_id, None)
                return Response(204 if gone else 404, b"")
        return Response(404, {"error": f"no route {request.method} {request.path}"})

    def _list(self, request: RecordedRequest) -> Response:
        with self.lock:
            if self.throttle_lists > 0:
                self.throttle_lists -= 1
                return Response(429, {"error": "slow down"}, {"Retry-After": self.retry_after})
        size = int(request.query.get("per_page", [self.page_size])[0])
        listing = self._listing()
        if "page" in request.query:
            start = (int(request.query["page"][0]) - 1) * size
        else:
            start = int(request.query.get("cursor", request.query.get("offset", ["0"]))[0])
        chunk = listing[start : start + size]
        following = start + size if start + size < len(listing) else None
        body: dict[str, Any] = {
            "data": [self.entry(e) for e in chunk],
            "next_cursor": str(following) if following is not None else None,
            "links": {"next": f"/items?offset={following}&per_page={size}" if following is not None else None},
        }
        headers = {"Link": f'<{self.url}/items?offset={following}&per_page={size}>; rel="next"'} if following is not None else {}
        return Response(200, body, headers)

    def _download(self, element_id: str) -> Response:
        with self.lock:
            failures = self.failing_downloads.get(element_id, 0)
            if failures:
                self.failing_downloads[element_id] = failures - 1
                return Response(500, {"error": "storage backend unavailable"})
            element = self.elements.get(element_id)
        if element is None:
            return Response(404, {"error": "no such element"})
        return Response(200, element.body, {"Content-Type": element.content_type, "ETag": f'"{element.version}"'})

    def start(self, http_server: Any) -> ElementsAPI:
        self.server = http_server(self.handle)
        return self

    def download_path(self, element_id: str) -> str:
        return f"/items/{quote(element_id, safe='')}/content"


def http_source(api: ElementsAPI, name: str = "api", **extra: Any) -> dict[str, Any]:
    """The ingest.yaml entry of an `http` source over the API, using only documented keys."""
    return {
        "name": name,
        "type": "http",
        "url": f"{api.url}/items",
        "paging": "page",
        "pageSize": api.page_size,
        "pageSizeParam": "per_page",
        "itemsField": "data",
        "idField": "id",
        "versionField": "revision",
        "sizeField": "size",
        "contentTypeField": "mime",
        "modifiedField": "updated_at",
        "downloadUrl": "/items/{id}/content",
        "versionHeader": "ETag",
        "cleanUpUrl": "/items/{id}",
        "token": "$ELEMENTS_API_TOKEN",
        "retries": 3,
        "retryBudget": "10s",
        **extra,
    }
