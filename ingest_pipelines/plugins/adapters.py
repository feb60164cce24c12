"""Plugin sources and destinations in the shape the sync core uses (the ObjectStore protocol plus a few
capabilities it asks for by name), and the mapping between element ids and object keys.

Keys are made from ids by escaping, so they are deterministic, never leave their folder and map back to the id
(a download is addressed by the id; the sync keeps keys only).
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from ingest_pipelines.config import StoreConfig
from ingest_pipelines.plugins.protocols import ID_PLACEHOLDER, Download, Element, ElementChanged, PluginError
from ingest_pipelines.storage import ObjectInfo, StoreError

#: ASCII characters kept as they are in keys (besides letters and digits; a space too); everything else is %XX.
_SAFE = frozenset("-._~!$'()+,;=@ ")
#: the key index holds versions up to this length; longer ones are replaced by their SHA-256.
MAX_VERSION = 200


class ElementKeyError(ValueError):
    """An id that cannot become a key (empty), or a key that does not come from the key template."""


def _keep(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in _SAFE
    # letters, digits, marks and symbols of other scripts stay readable; spaces, controls, separators do not
    return unicodedata.category(char)[0] in "LMNS"


def _escape(text: str, keep_slash: bool) -> str:
    out = []
    for char in text:
        if _keep(char) or (keep_slash and char == "/"):
            out.append(char)
        else:
            out.append("".join(f"%{byte:02X}" for byte in char.encode("utf-8")))
    return "".join(out)


def escape_id(element_id: str) -> str:
    """The key form of an id: `/` stays a folder separator when every segment is a plain name; otherwise (empty,
    `.` or `..` segments, a leading `/`) every `/` is escaped too, so no key can climb out of its folder or
    collapse onto another (`a//b` and `a/b` stay two keys). `%` is always escaped: the mapping is reversible."""
    if element_id == "":
        raise ElementKeyError("an element id must not be empty")
    segments = element_id.split("/")
    if all(segment not in ("", ".", "..") for segment in segments):
        return _escape(element_id, keep_slash=True)
    escaped = _escape(element_id, keep_slash=False)
    return {".": "%2E", "..": "%2E%2E"}.get(escaped, escaped)


def unescape_id(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text, encoding="utf-8", errors="strict")


@dataclass(frozen=True)
class KeyTemplate:
    """`prefix{id}suffix`: element id <-> key (relative to the source's `prefix`)."""

    template: str = ID_PLACEHOLDER
    store_prefix: str = ""

    def __post_init__(self) -> None:
        head, _, tail = self.template.partition(ID_PLACEHOLDER)
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_tail", tail)

    def full_key(self, element_id: str) -> str:
        return f"{self._head}{escape_id(element_id)}{self._tail}"  # type: ignore[attr-defined]

    def key(self, element_id: str) -> str | None:
        """The key relative to the store prefix, or None when the element lies outside that prefix."""
        full = self.full_key(element_id)
        if not full.startswith(self.store_prefix):
            return None
        return full[len(self.store_prefix) :]

    def element_id(self, key: str) -> str:
        full = self.store_prefix + key
        head, tail = self._head, self._tail  # type: ignore[attr-defined]
        if not (full.startswith(head) and full.endswith(tail) and len(full) > len(head) + len(tail)):
            raise ElementKeyError(f"key {key!r} does not match the key template {self.template!r}")
        return unescape_id(full[len(head) : len(full) - len(tail)])


def stored_version(version: str) -> str:
    """The version as the key index keeps it (a very long version becomes its digest)."""
    if len(version) <= MAX_VERSION:
        return version
    return "sha256:" + hashlib.sha256(version.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ListedElement:
    """An element as the sync's change detection sees it: its key, version, size (0: unknown), modified time."""

    key: str
    version: str
    size: int
    modified: float | None
    element_id: str


class _Stream:
    """A download's stream carrying its content type and metadata (read by the sync when it copies)."""

    def __init__(self, download: Download):
        raw = download.stream
        self._raw = io.BytesIO(bytes(raw)) if isinstance(raw, bytes | bytearray | memoryview) else raw  # bytes are fine too
        self.content_type = download.content_type
        self.metadata = dict(download.metadata)

    def read(self, size: int = -1) -> bytes:
        return self._raw.read(size)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NotAnObjectStore:
    """The ObjectStore methods a plugin cannot offer: they fail with the plugin's name."""

    config: StoreConfig
    role = ""

    def _refuse(self, what: str) -> StoreError:
        return StoreError(f"{self.config.name}: type {self.config.type!r} is a plugin {self.role}; it cannot {what}")

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[ObjectInfo]:
        raise self._refuse("list keys in order (plugin sources are enumerated: see enumerate_page)")

    def list_page(self, prefix: str = "", start_after: str | None = None, max_keys: int = 1000) -> tuple[list[ObjectInfo], bool]:
        raise self._refuse("list keys in order (plugin sources are enumerated: see enumerate_page)")

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        raise self._refuse("be written to")

    def uri(self, key: str = "") -> str:
        return self.config.uri(key) if hasattr(self.config, "uri") else f"{self.config.type}://{self.config.name}/{key}"  # type: ignore[attr-defined]


class ElementSourceStore(_NotAnObjectStore):
    """A plugin Source for the sync core. Capabilities it reads by name: `enumerate_page` (change detection
    enumerates instead of listing by key), `opaque_versions` (versions are the API's, not content hashes; size may
    be unknown), `open_element`, `exists`, `clean_up_element`."""

    role = "source"
    opaque_versions = True

    def __init__(self, config: StoreConfig, plugin: Any):
        self.config = config
        self.plugin = plugin
        self.keys = KeyTemplate(getattr(config, "keyTemplate", ID_PLACEHOLDER), config.prefix)

    def __repr__(self) -> str:
        return f"ElementSourceStore({self.config.name}: {type(self.plugin).__name__})"

    def enumerate_page(self, position: str | None) -> tuple[list[ListedElement], str | None]:
        """One page of the plugin's enumeration as keys and versions; elements outside the prefix are left out."""
        page = self.plugin.list_elements(position)
        out = []
        for element in page.elements:
            try:
                key = self.keys.key(str(element.id))
            except ElementKeyError as exc:
                raise PluginError(f"{self.config.name}: element {element.id!r}: {exc}") from None
            if key is None:
                continue
            size = int(element.size) if element.size is not None and element.size >= 0 else 0
            modified = element.modified.timestamp() if isinstance(element.modified, datetime) else element.modified
            out.append(ListedElement(key, stored_version(str(element.version)), size, modified, str(element.id)))
        return out, None if page.next is None else str(page.next)  # a page number given as an int is fine

    def _element(self, key: str, version: str = "") -> Element:
        try:
            return Element(id=self.keys.element_id(key), version=version)
        except (ElementKeyError, UnicodeDecodeError) as exc:
            raise StoreError(f"{self.config.name}: {exc}") from None

    def open_element(self, key: str, version: str = "") -> tuple[BinaryIO, str | None, dict[str, str] | None]:
        """The element's stream, content type and metadata (ElementNotFound when it is gone, ElementChanged when the
        plugin says it downloads another version than `version`)."""
        download = self.plugin.download(self._element(key, version))
        stream = _Stream(download)
        if version and download.version is not None and stored_version(str(download.version)) != version:
            stream.close()
            raise ElementChanged(f"{self.config.name}: {key!r} is at version {download.version!r} now, not {version!r}")
        return stream, download.content_type or mimetypes.guess_type(key)[0], dict(download.metadata) or None  # type: ignore[return-value]

    def open(self, key: str) -> BinaryIO:
        return self.open_element(key)[0]

    def get_bytes(self, key: str) -> bytes:
        with self.open_element(key)[0] as stream:  # type: ignore[attr-defined]
            return stream.read()

    def head(self, key: str) -> ObjectInfo | None:
        # a plugin source has no per-element metadata call; the sync asks `exists` where it matters
        return None

    def exists(self, key: str) -> bool | None:
        """Whether the element is still there (None: the plugin cannot tell)."""
        probe = getattr(self.plugin, "exists", None)
        if probe is None:
            return None
        return bool(probe(self._element(key)))

    def clean_up_element(self, key: str, version: str) -> bool:
        """connylabs' CleanUp through the plugin (idempotent)."""
        clean_up = getattr(self.plugin, "clean_up", None)
        if clean_up is None:
            raise PluginError(f"{self.config.name}: the workflow has `cleanUp: true` but type {self.config.type!r} has no clean_up")
        clean_up(self._element(key, version))
        return True

    def delete(self, key: str) -> None:
        self.clean_up_element(key, "")

    def upload_fileobj(self, key: str, fileobj: BinaryIO, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        raise self._refuse("be written to")


class ElementDestinationStore(_NotAnObjectStore):
    """A plugin Destination for the sync core. Capabilities it reads by name: `holds_version`, `store_version`."""

    role = "destination"

    def __init__(self, config: StoreConfig, plugin: Any):
        self.config = config
        self.plugin = plugin
        if getattr(config, "deletes", False) and not callable(getattr(plugin, "delete", None)):
            raise StoreError(f"{config.name}: `deletes: true` but type {config.type!r} cannot delete (its plugin has no delete)")

    def __repr__(self) -> str:
        return f"ElementDestinationStore({self.config.name}: {type(self.plugin).__name__})"

    def holds_version(self, key: str, version: str) -> bool:
        return bool(self.plugin.holds(key, version))

    def store_version(
        self,
        key: str,
        version: str,
        fileobj: BinaryIO,
        content_type: str | None = None,
        metadata: dict[str, str] | None = None,
        size: int | None = None,
    ) -> None:
        element = Element(id=key, version=version, size=size or None, content_type=content_type, metadata=dict(metadata or {}))
        self.plugin.store(key, element, Download(fileobj, content_type, size or None, dict(metadata or {})))

    def upload_fileobj(self, key: str, fileobj: BinaryIO, content_type: str | None = None, metadata: dict[str, str] | None = None) -> None:
        self.store_version(key, "", fileobj, content_type, metadata)

    def head(self, key: str) -> ObjectInfo | None:
        return None  # presence is asked per version (holds_version)

    def open(self, key: str) -> BinaryIO:
        raise self._refuse("be read from")

    def get_bytes(self, key: str) -> bytes:
        raise self._refuse("be read from")

    def delete(self, key: str) -> None:
        remove = getattr(self.plugin, "delete", None)
        if remove is None:
            raise self._refuse("delete")
        remove(key)

    def uri(self, key: str = "") -> str:
        custom = getattr(self.plugin, "uri", None)
        return custom(key) if callable(custom) else super().uri(key)


def adapt(config: StoreConfig, made: Any, role: str) -> Any:
    """What open_store returns for a plugin's source or destination object."""
    if role == "source":
        return ElementSourceStore(config, made)
    return ElementDestinationStore(config, made)
