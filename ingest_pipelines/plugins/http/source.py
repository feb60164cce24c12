"""The `http` source: enumerates a paged JSON list endpoint (page number, cursor or next link), downloads an
element from the download URL template, cleans it up with DELETE.

A position is the next page's number, cursor or URL, so an enumeration resumes across sensor ticks.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any
from urllib.parse import quote, urljoin

import orjson
import requests

from ingest_pipelines.plugins.http.client import HttpClient, error_snippet
from ingest_pipelines.plugins.http.config import HttpSourceConfig
from ingest_pipelines.plugins.protocols import ID_PLACEHOLDER, Download, Element, ElementNotFound, ElementPage, PluginError

log = logging.getLogger(__name__)

#: statuses that mean "this element is not there (any more)".
GONE = frozenset({404, 410})


def dotted(document: Any, path: str) -> Any:
    """`a.b.c` into nested objects (a number indexes a list); None when any step is missing."""
    if not path:
        return document
    current = document
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
        if current is None:
            return None
    return current


def parse_time(value: Any) -> float | None:
    """ISO 8601 (`2024-05-01T12:00:00Z`) or unix seconds (milliseconds when that large) -> unix seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 1e11 else float(value)
    text = str(value).strip()
    try:
        return parse_time(float(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _page_digest(elements: list[Element]) -> str:
    return hashlib.sha1("\0".join(e.id for e in elements).encode()).hexdigest()[:12]


def _header_version(value: str) -> str:
    """An ETag-like header as a version: without the weak marker and the quotes (`W/"rev-2"` -> `rev-2`)."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"')


def fingerprint(item: Any) -> str:
    """A version for an entry without a version field: any change of the listed entry is a new version."""
    return "sha1:" + hashlib.sha1(orjson.dumps(item, option=orjson.OPT_SORT_KEYS)).hexdigest()


class _Body:
    """A download's body, streamed (decoded per Content-Encoding); closing releases the connection."""

    def __init__(self, response: requests.Response):
        self._response = response
        response.raw.decode_content = True

    def read(self, size: int = -1) -> bytes:
        return self._response.raw.read(None if size is None or size < 0 else size)

    def close(self) -> None:
        self._response.close()


class HttpSource:
    """A Source (ingest_pipelines.plugins.protocols) over one HTTP JSON API."""

    def __init__(self, config: HttpSourceConfig):
        self.config = config
        headers = {"Accept": "application/json", **config.headers}
        token = config.token.reveal() if config.token is not None else None
        if token:
            headers[config.authHeader] = f"{config.authScheme} {token}" if config.authScheme else token
        self.client = HttpClient(f"source {config.name}", headers, config.timeout, config.retries, config.retryBudget)

    def __repr__(self) -> str:
        return f"HttpSource({self.config.name}: {self.config.url})"

    # ------------------------------------------------------------------ enumeration

    def _first_params(self) -> dict[str, Any]:
        params: dict[str, Any] = dict(self.config.params)
        if self.config.pageSize is not None and self.config.pageSizeParam:
            params[self.config.pageSizeParam] = self.config.pageSize
        return params

    def list_elements(self, position: str | None) -> ElementPage:
        cfg = self.config
        params = self._first_params()
        url = cfg.url
        if cfg.paging == "page":
            number = (position or "").partition("|")[0]
            params[cfg.pageParam] = int(number) if number else cfg.firstPage
        elif cfg.paging == "cursor" and position:
            params[cfg.cursorParam] = position
        elif cfg.paging == "next-link" and position:
            url, params = position, {}  # the link carries its own query
        response = self.client.request("GET", url, params=params or None)
        if response.status_code // 100 != 2:
            raise PluginError(
                f"source {cfg.name}: GET {response.url}: HTTP {response.status_code} listing elements{error_snippet(response)}"
            )
        try:
            body = response.json()
        except ValueError:
            raise PluginError(f"source {cfg.name}: GET {response.url}: the answer is not JSON") from None
        items = dotted(body, cfg.itemsField)
        if items is None:
            items = []
        if not isinstance(items, list):
            raise PluginError(f"source {cfg.name}: GET {response.url}: {cfg.itemsField or 'the answer'!s} is not a list")
        elements = self._elements(items, response.url)
        if cfg.paging == "page" and position and elements and position.partition("|")[2] == _page_digest(elements):
            # an API that answers a page past the end with its last page again: the enumeration ended before it
            log.warning("source %s: page %s repeats the page before it; the enumeration ends here", cfg.name, params[cfg.pageParam])
            return ElementPage([], None)
        return ElementPage(elements, self._next(position, body, response, elements))

    def _next(self, position: str | None, body: Any, response: requests.Response, elements: list[Element]) -> str | None:
        cfg = self.config
        if cfg.paging == "none":
            return None
        if cfg.paging == "page":
            # the number of the next page, and a digest of this one's ids (to notice a page answered twice)
            count = len(dotted(body, cfg.itemsField) or [])
            if count == 0 or (cfg.pageSize is not None and count < cfg.pageSize):
                return None
            number = (position or "").partition("|")[0]
            return f"{(int(number) if number else cfg.firstPage) + 1}|{_page_digest(elements)}"
        if cfg.paging == "cursor":
            cursor = dotted(body, cfg.cursorField)
            if cursor in (None, "", False):
                return None
            cursor = _text(cursor)
            if cursor == position:  # an API that repeats its cursor would enumerate forever
                log.warning("source %s: the API answered the same cursor %r again; the enumeration ends here", cfg.name, cursor)
                return None
            return cursor
        link = dotted(body, cfg.nextField) if cfg.nextField else (response.links.get("next") or {}).get("url")
        if not link or not isinstance(link, str):
            return None
        following = urljoin(response.url, link)
        if following == position or following == response.url:
            log.warning("source %s: the next link points at the same page %s; the enumeration ends here", cfg.name, following)
            return None
        return following

    def _elements(self, items: list[Any], where: str) -> list[Element]:
        cfg = self.config
        out: list[Element] = []
        skipped = 0
        for item in items:
            element_id = dotted(item, cfg.idField) if isinstance(item, dict) else None
            if element_id is None or element_id == "" or isinstance(element_id, dict | list):
                skipped += 1
                continue
            version = dotted(item, cfg.versionField) if cfg.versionField else None
            size = dotted(item, cfg.sizeField) if cfg.sizeField else None
            content_type = dotted(item, cfg.contentTypeField) if cfg.contentTypeField else None
            out.append(
                Element(
                    id=_text(element_id),
                    version=_text(version) if version not in (None, "") else fingerprint(item),
                    size=int(size) if isinstance(size, int | float) and not isinstance(size, bool) and size >= 0 else None,
                    content_type=str(content_type) if content_type else None,
                    modified=parse_time(dotted(item, cfg.modifiedField)) if cfg.modifiedField else None,
                )
            )
        if skipped:
            log.warning("source %s: %s: %d element(s) without a usable %r skipped", cfg.name, where, skipped, cfg.idField)
        return out

    # ------------------------------------------------------------------ one element

    def _url(self, template: str, element: Element) -> str:
        escaped = quote(element.id, safe="")
        if escaped in (".", ".."):  # a bare dot segment would be resolved away by the URL, not sent
            escaped = escaped.replace(".", "%2E")
        return self.config.resolve(template).replace(ID_PLACEHOLDER, escaped)

    def _call(self, method: str, url: str, what: str, element: Element, stream: bool = False) -> requests.Response:
        try:
            return self.client.request(method, url, stream=stream)
        except PluginError as exc:  # name the element, not only its URL (ids are escaped there)
            raise PluginError(f"{exc} ({what} element {element.id!r})") from None

    def download(self, element: Element) -> Download:
        url = self._url(self.config.downloadUrl, element)
        response = self._call("GET", url, "downloading", element, stream=True)
        if response.status_code in GONE:
            response.close()
            raise ElementNotFound(f"source {self.config.name}: element {element.id!r} is gone (GET {url}: HTTP {response.status_code})")
        if response.status_code // 100 != 2:
            message = f"source {self.config.name}: GET {url}: HTTP {response.status_code} downloading element {element.id!r}{error_snippet(response)}"
            response.close()
            raise PluginError(message)
        length = response.headers.get("Content-Length")
        version = response.headers.get(self.config.versionHeader) if self.config.versionHeader else None
        return Download(
            _Body(response),  # type: ignore[arg-type]
            content_type=response.headers.get("Content-Type") or element.content_type,
            size=int(length) if length and length.isdigit() else None,
            version=_header_version(version) if version is not None else None,
        )

    def exists(self, element: Element) -> bool:
        """Asked before an element missing from a complete enumeration counts as deleted: GET its download URL
        (the answer's body is not read)."""
        url = self._url(self.config.downloadUrl, element)
        response = self._call("GET", url, "checking", element, stream=True)
        status = response.status_code
        response.close()
        if status in GONE:
            return False
        if status // 100 == 2:
            return True
        raise PluginError(f"source {self.config.name}: GET {url}: HTTP {status} checking whether element {element.id!r} still exists")

    def clean_up(self, element: Element) -> None:
        if not self.config.cleanUpUrl:
            raise PluginError(f"source {self.config.name}: the workflow has `cleanUp: true` but the source has no `cleanUpUrl`")
        url = self._url(self.config.cleanUpUrl, element)
        response = self._call("DELETE", url, "cleaning up", element)
        status = response.status_code
        response.close()
        if status in GONE or status // 100 == 2:
            return  # gone already counts as done: CleanUp is idempotent
        raise PluginError(f"source {self.config.name}: DELETE {url}: HTTP {status} cleaning up element {element.id!r}")
