"""The `type: http` source's keys: a paged JSON list endpoint, the fields of an element, the download URL template,
auth by header from a `$VAR` secret, retries."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import urljoin, urlsplit

from pydantic import Field, field_validator, model_validator

from ingest_pipelines.config import Duration, SecretField
from ingest_pipelines.plugins.protocols import ID_PLACEHOLDER, PluginConfig

Paging = Literal["page", "cursor", "next-link", "none"]


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value.replace(ID_PLACEHOLDER, "x"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} {value!r} is not an http(s) URL")
    return value


class HttpSourceConfig(PluginConfig):
    """An HTTP JSON API as a sync source."""

    type: Literal["http"] = "http"
    #: the list endpoint (GET); its answer is JSON.
    url: str
    #: how the list is paged: `page` (a page-number parameter), `cursor` (a cursor from the answer sent back as a
    #: parameter), `next-link` (the next page's URL from the answer, or the `Link: <...>; rel="next"` header), `none`.
    paging: Paging = "next-link"
    #: dotted path of the element list in a page (`data`, `result.items`); empty: the answer is the list.
    itemsField: str = ""
    #: extra query parameters of the list endpoint.
    params: dict[str, str] = Field(default_factory=dict)
    #: paging: page -- the page-number parameter and the first page's number.
    pageParam: str = "page"
    firstPage: int = 1
    #: page size sent as `pageSizeParam` (any paging); with `paging: page`, a shorter page is the last one.
    pageSize: int | None = Field(default=None, ge=1)
    pageSizeParam: str | None = None
    #: paging: cursor -- the query parameter that carries the cursor, and where the answer holds the next one.
    cursorParam: str = "cursor"
    cursorField: str = "next_cursor"
    #: paging: next-link -- dotted path of the next page's URL in the answer; unset: the Link header.
    nextField: str | None = None
    #: element fields (dotted paths into one element of the list).
    idField: str = "id"
    #: what changes when the element changes (updated-at, etag, revision); unset: a fingerprint of the whole entry.
    versionField: str | None = None
    sizeField: str | None = None
    contentTypeField: str | None = None
    #: when the element last changed (ISO 8601 or unix seconds): change positions, partitions and `settleDelay`.
    modifiedField: str | None = None
    #: GET this for an element's content; `{id}` is replaced by the URL-escaped id; relative to `url` allowed.
    downloadUrl: str
    #: a header of the download's answer that carries the element's version as `versionField` gives it (e.g. ETag):
    #: an element that changed since it was listed is then skipped, and recorded once, by its next change.
    versionHeader: str | None = None
    #: DELETE this after every destination holds the element (workflow `cleanUp: true`); 404/410 count as done.
    cleanUpUrl: str | None = None
    #: extra request headers (not secret: they are shown by `ingest-pipelines plugins` and may be logged).
    headers: dict[str, str] = Field(default_factory=dict)
    #: auth: header `authHeader: <authScheme> <token>` (`authScheme: ""` sends the token alone).
    authHeader: str = "Authorization"
    authScheme: str = "Bearer"
    token: SecretField = None
    #: per attempt: connecting, and each wait for data (a long download that keeps sending is not cut).
    timeout: Duration = 10.0
    #: attempts after the first on 408/425/429/5xx and connection errors, waiting `Retry-After` or an exponential
    #: backoff (0.5 s, 1 s, 2 s, ... at most 30 s); no attempt starts `retryBudget` after the first one did. A
    #: call thus takes at most about retryBudget + timeout; with the sync's tickSeconds (20 s) a sensor tick
    #: stays under Dagster's 60 s.
    retries: int = Field(default=5, ge=0, le=20)
    retryBudget: Duration = 20.0

    summary: ClassVar[str] = "an HTTP JSON API: paged list endpoint, download URL template, header auth"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url")

    @field_validator("downloadUrl", "cleanUpUrl")
    @classmethod
    def _template(cls, value: str | None, info) -> str | None:  # type: ignore[no-untyped-def]
        if value is None:
            return value
        if ID_PLACEHOLDER not in value:
            raise ValueError(f"{info.field_name} must contain {{id}} (where the element's id goes)")
        return value

    @field_validator("timeout", "retryBudget")
    @classmethod
    def _positive(cls, value: float, info) -> float:  # type: ignore[no-untyped-def]
        if value <= 0:
            raise ValueError(f"{info.field_name} must be positive")
        return value

    @model_validator(mode="after")
    def _absolute_templates(self) -> HttpSourceConfig:
        for name in ("downloadUrl", "cleanUpUrl"):
            template = getattr(self, name)
            if template is not None:
                _http_url(self.resolve(template), name)
        return self

    def resolve(self, template: str) -> str:
        """A URL template made absolute against `url`."""
        if "://" in template:
            return template
        return urljoin(self.url, template.replace(ID_PLACEHOLDER, "\0")).replace("\0", ID_PLACEHOLDER)

    def uri(self, key: str = "") -> str:
        return self.url if not key else f"{self.url}#{self.prefix}{key}"
