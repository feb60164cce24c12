"""Object keys from element ids: deterministic, reversible (two ids never share a key), and never outside a
folder destination whatever the id (`..`, leading `/`, empty segments, control characters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest_pipelines.config import ConfigError, FilesystemStoreConfig, parse_config
from ingest_pipelines.plugins.adapters import ElementKeyError, KeyTemplate, escape_id, unescape_id
from ingest_pipelines.storage.filesystem import FilesystemStore

NASTY_IDS = [
    "plain",
    "a/b/c.txt",
    "../escape",
    "..",
    ".",
    "/etc/passwd",
    "a//b",
    "a/./b",
    "a/../../b",
    "trailing/",
    "with space",
    "tab\there",
    "new\nline",
    "percent%2Fslash",
    "ü-ñ-日本",
    "\u202eevil",
    "null\x00byte",
    "a%b",
    "42",
]


@pytest.mark.parametrize(
    ("element_id", "key"),
    [
        ("plain", "plain"),
        ("a/b/c.txt", "a/b/c.txt"),
        ("with space", "with space"),
        ("ü-日本", "ü-日本"),
        ("../escape", "..%2Fescape"),
        ("..", "%2E%2E"),
        (".", "%2E"),
        ("/etc/passwd", "%2Fetc%2Fpasswd"),
        ("a//b", "a%2F%2Fb"),
        ("trailing/", "trailing%2F"),
        ("a%b", "a%25b"),
        ("new\nline", "new%0Aline"),
        ("\u202eevil", "%E2%80%AEevil"),
    ],
)
def test_escape_id(element_id: str, key: str) -> None:
    assert escape_id(element_id) == key
    assert unescape_id(key) == element_id


def test_keys_are_reversible_and_distinct_for_distinct_ids() -> None:
    keys = [escape_id(i) for i in NASTY_IDS]
    assert len(set(keys)) == len(NASTY_IDS)
    assert [unescape_id(k) for k in keys] == NASTY_IDS
    assert [escape_id(i) for i in NASTY_IDS] == keys  # deterministic


def test_no_key_leaves_a_folder_destination(tmp_path: Path) -> None:
    store = FilesystemStore(FilesystemStoreConfig(name="out", path=str(tmp_path / "out")))
    for element_id in NASTY_IDS:
        key = KeyTemplate("docs/{id}.bin").full_key(element_id)
        assert not any(part in ("", ".", "..") for part in key.split("/")), key
        store.put_bytes(key, element_id.encode())  # raises if the path leaves the root
    written = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(written) == len(NASTY_IDS) and all((tmp_path / "out" / "docs") in p.parents for p in written)


def test_key_template_with_a_store_prefix() -> None:
    template = KeyTemplate("docs/{id}.json", store_prefix="docs/")
    assert template.key("a b") == "a b.json"
    assert template.element_id("a b.json") == "a b"
    assert KeyTemplate("other/{id}", store_prefix="docs/").key("x") is None  # outside the source prefix: not synced
    with pytest.raises(ElementKeyError, match="does not match the key template"):
        template.element_id("a b.txt")
    with pytest.raises(ElementKeyError, match="must not be empty"):
        escape_id("")


@pytest.mark.parametrize(
    ("template", "message"),
    [("{id}/{id}", "exactly once"), ("files", "exactly once"), ("../{id}", "without empty, '.' or '..'"), ("/abs/{id}", "relative")],
)
def test_bad_key_template_is_a_config_error(template: str, message: str) -> None:
    source = {"name": "api", "type": "http", "url": "http://127.0.0.1:9/items", "downloadUrl": "/items/{id}", "keyTemplate": template}
    with pytest.raises(ConfigError, match=rf"sources\[0\] \(api\): field 'keyTemplate': Value error, .*{message}"):
        parse_config({"sources": [source]}, "ingest.yaml")
