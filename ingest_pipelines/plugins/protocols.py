"""The plugin interface (connylabs' model, in Python): a source enumerates elements of an API and downloads
them, a destination stores them; each plugin brings a pydantic config model. No Dagster here.

connylabs -> here: Nexter.Reset + Next -> `Source.list_elements(None)` then `list_elements(page.next)` until
`next is None` (io.EOF); Client.Download -> `Source.download`; Client.CleanUp -> `Source.clean_up`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar, Protocol, runtime_checkable

from pydantic import field_validator

from ingest_pipelines.config import StoreConfig
from ingest_pipelines.storage import StoreError


class PluginError(RuntimeError):
    """A plugin call failed (an API error after retries, a bad answer); the message names the plugin and the call.
    Not a StoreError: a sync run records it as a failure of that element and retries, it is never "source missing"."""


class ElementNotFound(StoreError):
    """The element is gone from the source (404/410 on download): the sync counts it `source_missing` and a later
    pass records the delete."""

    #: how the sync core counts it (copies.open_version)
    sync_kind = "source-missing"


class ElementChanged(StoreError):
    """The source holds a newer version than the one asked for: the change is `superseded`, the later change
    (found by the next pass) carries the new version, so no destination gets the new content under the old one."""

    sync_kind = "superseded"


@dataclass(frozen=True)
class Element:
    """One element of a source (connylabs' Codec). `id` addresses it in the API; `version` is whatever changes when
    its content changes (an updated-at, an ETag, a content hash, a fingerprint of its listing entry)."""

    id: str
    version: str
    #: bytes, when the listing says (None: unknown; the sync then compares versions only).
    size: int | None = None
    content_type: str | None = None
    #: last change, unix seconds, when the listing says (None: the time it was first seen is used).
    modified: float | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ElementPage:
    """One page of an enumeration and where the next one starts (an opaque string the source understands: a page
    number, a cursor, a URL). `next is None`: the enumeration is complete (connylabs' io.EOF)."""

    elements: list[Element]
    next: str | None


@dataclass
class Download:
    """An element's content as a stream (connylabs' Object: MimeType, Len, Reader). The caller closes `stream`.
    `version`, when the source knows it, is the version of what is being downloaded: if it is not the version
    asked for, the download is dropped as superseded (the next pass finds the new version)."""

    stream: BinaryIO
    content_type: str | None = None
    size: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    version: str | None = None


@runtime_checkable
class Source(Protocol):
    """What a source plugin implements. Optional: `exists(element) -> bool`, asked before an element missing from
    a complete enumeration is recorded as deleted (an API whose pages shift while they are read can skip one)."""

    def list_elements(self, position: str | None) -> ElementPage:
        """The page at `position` (None: the first page). Any order; a position saved between calls (across sensor
        ticks, processes, days) must still work, or raise PluginError."""
        ...

    def download(self, element: Element) -> Download:
        """The element's content now. Raise ElementNotFound when it is gone, PluginError for anything else."""
        ...

    def clean_up(self, element: Element) -> None:
        """Remove the element from the source after every destination holds it (workflow `cleanUp: true`).
        Idempotent: called again after a crash, or for an element already gone, it must succeed."""
        ...


@runtime_checkable
class Destination(Protocol):
    """What a destination plugin implements. Optional: `delete(key)` (a destination with `deletes: true`) and
    `uri(key) -> str` (what the webhook reports; default `<type>://<name>/<key>`)."""

    def holds(self, key: str, version: str) -> bool:
        """Whether the destination already holds `key` at `version` (then it is not stored again)."""
        ...

    def store(self, key: str, element: Element, download: Download) -> None:
        """Store one element under `key` (relative to the destination; derived from the source's key). Writing the
        same key and version again must leave one copy."""
        ...


#: the key template's placeholder: keys are made from element ids, and ids from keys (a download needs the id).
ID_PLACEHOLDER = "{id}"


class PluginConfig(StoreConfig):
    """Base of a plugin's config model: the common keys (`name`, `type`, `prefix`) and, for sources, `keyTemplate`.

    Declare `type: Literal["<your type>"] = "<your type>"` and your keys; a field typed `SecretField` takes `$VAR`
    (resolved when used, never shown). ingest.yaml errors then name the file, the item and your field."""

    #: how an element's key is made from its id: `{id}` exactly once, e.g. `docs/{id}.pdf` (the id is escaped so
    #: that a key never leaves its folder and two ids never share a key).
    keyTemplate: str = ID_PLACEHOLDER

    #: shown by `ingest-pipelines plugins` when set.
    summary: ClassVar[str] = ""

    @field_validator("keyTemplate")
    @classmethod
    def _key_template(cls, value: str) -> str:
        if value.count(ID_PLACEHOLDER) != 1:
            raise ValueError("keyTemplate must contain {id} exactly once")
        literal = value.replace(ID_PLACEHOLDER, "x")
        if literal.startswith("/") or any(part in ("", ".", "..") for part in literal.split("/")):
            raise ValueError(f"keyTemplate {value!r} must be a relative path without empty, '.' or '..' segments")
        return value

    @field_validator("metafilesPrefix", check_fields=False)
    @classmethod
    def _no_markers(cls, value: str | None) -> str | None:
        # connylabs markers are empty objects beside the copies: only bucket and folder destinations hold them
        if value is not None:
            raise ValueError("markers (metafilesPrefix) are written by s3 and filesystem destinations only")
        return value

    def uri(self, key: str = "") -> str:
        return f"{self.type}://{self.name}/{self.prefix}{key}"
