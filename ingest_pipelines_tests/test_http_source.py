"""The `http` source against a JSON API on loopback: the three paging styles (resumed from a saved position), the
element fields, bearer auth from a `$VAR` secret, 429 with Retry-After, 5xx retries and the retry budget,
downloads (404, 500), exists, cleanUp (DELETE, idempotent), and its config errors."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ingest_pipelines.config import ConfigError, Secret, parse_config
from ingest_pipelines.plugins import Element, ElementNotFound, PluginError
from ingest_pipelines.plugins.http import HttpSource, HttpSourceConfig
from ingest_pipelines.plugins.http.client import backoff_seconds, retry_after_seconds
from ingest_pipelines.plugins.http.source import parse_time
from ingest_pipelines_tests.http_source_fixtures import ElementsAPI, http_source

IDS = ["alpha", "a/b", "../escape", "with space", "ü", "zeta", "42"]


@pytest.fixture
def api(http_server, monkeypatch) -> ElementsAPI:
    api = ElementsAPI(page_size=3).start(http_server)
    monkeypatch.setenv("ELEMENTS_API_TOKEN", api.token)
    for i, element_id in enumerate(IDS):
        api.put(element_id, f"body of {element_id}".encode(), "text/plain" if i % 2 else "application/json")
    return api


def source(api: ElementsAPI, **extra: Any) -> HttpSource:
    config = parse_config({"sources": [http_source(api, **extra)]}, "ingest.yaml").source("api")
    assert isinstance(config, HttpSourceConfig)
    return HttpSource(config)


def enumerate_all(src: HttpSource, restart_each_page: bool = False, api: ElementsAPI | None = None, **extra: Any) -> list[str]:
    """Every element id, page by page; optionally through a fresh source per page (a saved position, a new process)."""
    ids, position, pages = [], None, 0
    while True:
        page = src.list_elements(position)
        ids += [e.id for e in page.elements]
        pages += 1
        assert pages < 20, "the enumeration does not end"
        if page.next is None:
            return ids
        position = page.next
        if restart_each_page:
            assert api is not None
            src = source(api, **extra)


@pytest.mark.parametrize(
    "paging",
    [
        {"paging": "page"},
        {"paging": "cursor", "cursorParam": "cursor", "cursorField": "next_cursor"},
        {"paging": "next-link", "nextField": "links.next"},
        {"paging": "next-link"},  # the Link header
    ],
    ids=["page", "cursor", "next-link-field", "next-link-header"],
)
def test_each_paging_style_enumerates_every_element_once_and_resumes(api, paging) -> None:
    listed = enumerate_all(source(api, **paging))
    assert sorted(listed) == sorted(IDS) and len(listed) == len(IDS)
    assert listed != sorted(listed)  # the API's own order
    resumed = enumerate_all(source(api, **paging), restart_each_page=True, api=api, **paging)
    assert resumed == listed


def test_page_paging_stops_at_a_short_page_without_asking_for_an_empty_one(api) -> None:
    enumerate_all(source(api, paging="page"))
    pages = [r.query["page"][0] for r in api.requests("GET", "/items") if r.path == "/items"]
    assert pages == ["1", "2", "3"]  # 7 elements, 3 per page: page 3 is short


def test_page_paging_ends_when_an_api_answers_past_the_end_with_its_last_page(http_server) -> None:
    from ingest_pipelines.testing.http_server import Response

    def handler(request):  # two full pages, then page 2 again for any later page (clamped)
        page = min(int(request.query["page"][0]), 2)
        return Response(200, [{"id": f"p{page}-{i}"} for i in range(2)])

    server = http_server(handler)
    config = HttpSourceConfig(name="c", url=f"{server.url}/items", downloadUrl="/x/{id}", paging="page", pageSize=2)
    ids = enumerate_all(HttpSource(config))
    assert ids == ["p1-0", "p1-1", "p2-0", "p2-1"]
    assert [r.query["page"][0] for r in server.requests] == ["1", "2", "3"]


def test_element_fields(api) -> None:
    page = source(api, paging="none", pageSize=100).list_elements(None)
    element = next(e for e in page.elements if e.id == "a/b")
    stored = api.elements["a/b"]
    assert element.version == "rev-1" and element.size == len(stored.body) and element.content_type == "text/plain"
    assert element.modified == pytest.approx(int(stored.updated_at), abs=1)
    assert page.next is None


def test_without_a_version_field_the_entry_is_fingerprinted(api) -> None:
    src = source(api, paging="none", pageSize=100, versionField=None)
    before = {e.id: e.version for e in src.list_elements(None).elements}
    assert all(v.startswith("sha1:") for v in before.values())
    api.put("zeta", b"changed")  # its entry's revision and size change
    after = {e.id: e.version for e in src.list_elements(None).elements}
    assert [i for i in IDS if before[i] != after[i]] == ["zeta"]


def test_entries_without_an_id_are_skipped(http_server, monkeypatch, caplog) -> None:
    from ingest_pipelines.testing.http_server import Response

    server = http_server(lambda request: Response(200, {"data": [{"id": "ok"}, {"name": "no id"}, "not an object", {"id": ""}]}))
    config = HttpSourceConfig(name="api", url=f"{server.url}/items", itemsField="data", downloadUrl="/x/{id}", paging="none")
    elements = HttpSource(config).list_elements(None).elements
    assert [e.id for e in elements] == ["ok"]
    assert "3 element(s) without a usable 'id' skipped" in caplog.text


def test_auth_header_comes_from_the_secret_and_a_wrong_token_fails_without_showing_it(api, monkeypatch) -> None:
    src = source(api)
    src.list_elements(None)
    assert api.server.requests[-1].headers["Authorization"] == f"Bearer {api.token}"
    assert src.config.token == Secret(env_var="ELEMENTS_API_TOKEN")
    monkeypatch.setenv("ELEMENTS_API_TOKEN", "wrong-token-value")
    with pytest.raises(PluginError, match=r"source api: GET .*/items\?.*HTTP 401 listing elements") as info:
        source(api).list_elements(None)
    assert "wrong-token-value" not in str(info.value)


def test_custom_auth_header_without_scheme(api, http_server) -> None:
    seen = []
    from ingest_pipelines.testing.http_server import Response

    def handler(request):
        seen.append(request.headers.get("X-Api-Key"))
        return Response(200, [])

    server = http_server(handler)
    config = HttpSourceConfig(
        name="k", url=f"{server.url}/items", downloadUrl="/x/{id}", authHeader="X-Api-Key", authScheme="", token="literal-key"
    )
    HttpSource(config).list_elements(None)
    assert seen == ["literal-key"]


def test_429_is_retried_after_retry_after(api) -> None:
    api.throttle_lists = 2
    src = source(api)
    waits: list[float] = []
    src.client.sleep = waits.append
    assert len(src.list_elements(None).elements) == 3
    assert waits == [1.0, 1.0]  # Retry-After: 1, twice
    assert len(api.requests("GET", "/items")) == 3


def test_429_waits_for_real(api) -> None:
    api.throttle_lists = 1
    started = time.monotonic()
    assert source(api).list_elements(None).elements
    assert time.monotonic() - started >= 1.0


def test_a_retry_after_beyond_the_budget_fails_at_once(api) -> None:
    api.throttle_lists = 1
    api.retry_after = "120"
    src = source(api, retryBudget="10s")
    src.client.sleep = lambda seconds: pytest.fail(f"slept {seconds}")
    with pytest.raises(PluginError, match=r"HTTP 429 .*waiting 120s more would pass retryBudget \(10s\) after 1 attempt"):
        src.list_elements(None)


def test_download_retries_a_500_then_succeeds(api) -> None:
    api.failing_downloads["a/b"] = 2
    src = source(api, retries=2)
    src.client.sleep = lambda seconds: None
    download = src.download(next(e for e in src.list_elements(None).elements if e.id == "a/b"))
    try:
        assert download.stream.read() == b"body of a/b" and download.content_type == "text/plain"
    finally:
        download.stream.close()
    assert [r.path for r in api.requests("GET", "/items/")] == [api.download_path("a/b")] * 3


def test_the_download_reports_the_version_of_its_etag(api) -> None:
    src = source(api)
    download = src.download(Element("a/b", "rev-1"))
    download.stream.close()
    assert download.version == "rev-1"  # ETag "rev-1", quotes removed
    download = source(api, versionHeader=None).download(Element("a/b", "rev-1"))
    download.stream.close()
    assert download.version is None


def test_a_persistent_500_fails_the_download_naming_the_element(api) -> None:
    api.failing_downloads["zeta"] = 10
    src = source(api, retries=1)
    src.client.sleep = lambda seconds: None
    with pytest.raises(
        PluginError,
        match=r"source api: GET .*/items/zeta/content: HTTP 500 \(.*storage backend unavailable.*\) after 2 attempt\(s\) \(downloading element 'zeta'\)",
    ):
        src.download(Element("zeta", "rev-1"))


def test_a_missing_element_is_not_found_and_exists_tells(api) -> None:
    src = source(api)
    gone = Element("no-such-id", "rev-1")
    with pytest.raises(ElementNotFound, match="element 'no-such-id' is gone"):
        src.download(gone)
    assert src.exists(gone) is False
    assert src.exists(Element("..", "")) is False  # a dot id is sent escaped, not resolved away
    assert src.exists(Element("../escape", "")) is True


def test_clean_up_deletes_and_is_idempotent(api) -> None:
    src = source(api)
    src.clean_up(Element("a/b", "rev-1"))
    assert "a/b" not in api.elements
    src.clean_up(Element("a/b", "rev-1"))  # a 404 now: done already
    assert [r.path for r in api.requests("DELETE")] == ["/items/a%2Fb", "/items/a%2Fb"]
    without = source(api, cleanUpUrl=None)
    with pytest.raises(PluginError, match="has no `cleanUpUrl`"):
        without.clean_up(Element("alpha", "rev-1"))


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"downloadUrl": "/items/content"}, "downloadUrl", "must contain {id}"),
        ({"url": "ftp://example/items"}, "url", "is not an http(s) URL"),
        ({"paging": "offset"}, "paging", "Input should be 'page', 'cursor', 'next-link' or 'none'"),
        ({"retries": 99}, "retries", "less than or equal to 20"),
        ({"timeout": "soon"}, "timeout", "invalid duration"),
        ({"tokn": "abc"}, "tokn", "unknown key"),
    ],
)
def test_config_errors_name_the_file_the_source_and_the_field(api, extra, field, message) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"sources": [http_source(api, **extra)]}, "/srv/ingest.yaml")
    text = str(info.value)
    assert text.startswith("/srv/ingest.yaml: sources[0] (api): field ") and f"'{field}'" in text and message in text


def test_retry_after_and_backoff() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    assert [backoff_seconds(n) for n in (1, 2, 3, 10)] == [0.5, 1.0, 2.0, 30.0]


def test_parse_time() -> None:
    assert parse_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert parse_time("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert parse_time(1714564800) == 1714564800.0
    assert parse_time(1714564800000) == 1714564800.0  # milliseconds
    assert parse_time("yesterday") is None and parse_time(None) is None
