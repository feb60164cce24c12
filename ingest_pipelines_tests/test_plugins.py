"""The plugin registry: built-in types are entry points of this distribution; a plugin type from another
distribution validates like a built-in one; a broken plugin, two plugins with one name, a type in the wrong role
and an unknown type are config errors naming the entry point or the field; `ingest-pipelines plugins`.

Other distributions are real: dist-info folders with an entry_points.txt on sys.path, found by importlib.metadata.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingest_pipelines.config import S3StoreConfig, Secret, load_config
from ingest_pipelines.plugins import REGISTRY
from ingest_pipelines.plugins.adapters import ElementDestinationStore, ElementSourceStore
from ingest_pipelines.plugins.registry import BUILTIN_ENTRY_POINTS, ENTRY_POINT_GROUP, Registry
from ingest_pipelines.storage import StoreError, open_store
from ingest_pipelines_tests.conftest import subprocess_env

BUILTINS = {"s3", "filesystem", "s3-records", "filesystem-records", "http"}

MEMO_MODULE = """
from typing import Literal
from pydantic import Field
from ingest_pipelines.plugins import ElementPage, Plugin, PluginConfig, SecretField

class MemoConfig(PluginConfig):
    type: Literal["memo"] = "memo"
    apiKey: SecretField = None
    limit: int = Field(default=10, ge=1)

class MemoSource:
    def __init__(self, config):
        self.config = config
    def list_elements(self, position):
        return ElementPage([], None)
    def download(self, element):
        raise NotImplementedError
    def clean_up(self, element):
        pass

class MemoSink:
    def __init__(self, config):
        self.config = config
    def holds(self, key, version):
        return False
    def store(self, key, element, download):
        pass

plugin = Plugin(config=MemoConfig, source=MemoSource, destination=MemoSink, summary="memos")
"""


def fake_distribution(site: Path, name: str, entry_points: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """A distribution as pip leaves it (a dist-info folder), registering `entry_points` in the plugin group."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}\n")
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder on sys.path for fake distributions; the registry forgets them afterwards."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    REGISTRY.refresh()
    yield folder
    for module in [m for m in sys.modules if m.startswith("memo_plugin")]:
        del sys.modules[module]
    REGISTRY.refresh()


def test_builtin_types_are_entry_points_of_this_distribution() -> None:
    ours = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.dist.name == "ingest_pipelines"}
    assert ours == BUILTIN_ENTRY_POINTS  # pyproject.toml and the fallback list say the same
    REGISTRY.refresh()
    assert BUILTINS <= set(REGISTRY.names())
    assert REGISTRY.plugin("s3").config is S3StoreConfig
    assert REGISTRY.plugin("http").roles == ("source",)
    assert REGISTRY.plugin("s3-records").roles == ("destination",)


def test_registry_uses_the_builtin_list_when_this_package_was_installed_without_entry_points(monkeypatch, caplog) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    registry = Registry()
    with caplog.at_level(logging.WARNING):
        names = registry.names()
    assert set(names) == BUILTINS
    assert registry.plugin("filesystem").roles == ("source", "destination", "state")
    assert any("reinstall" in record.getMessage() for record in caplog.records)


def test_a_plugin_from_another_distribution_validates_like_a_builtin_type(site, write_config, monkeypatch) -> None:
    fake_distribution(site, "memo-plugin", {"memo": "memo_plugin:plugin"}, {"memo_plugin": MEMO_MODULE})
    monkeypatch.setenv("MEMO_KEY", "k-very-secret")
    document = {"sources": [{"name": "m", "type": "memo", "apiKey": "$MEMO_KEY", "limit": 5}]}
    config = load_config(write_config(document))
    memo = config.source("m")
    assert type(memo).__name__ == "MemoConfig" and memo.limit == 5
    assert memo.apiKey == Secret(env_var="MEMO_KEY") and memo.apiKey.reveal() == "k-very-secret"
    assert "k-very-secret" not in repr(config)

    path = write_config({"sources": [{"name": "m", "type": "memo", "limit": 0}]})
    with pytest.raises(Exception, match=rf"{path}: sources\[0\] \(m\): field 'limit': Input should be greater than or equal to 1"):
        load_config(path)
    with pytest.raises(Exception, match=r"sources\[0\] \(m\): field 'bogus': unknown key"):
        load_config(write_config({"sources": [{"name": "m", "type": "memo", "bogus": 1}]}))
    with pytest.raises(Exception, match=r"destinations\[0\] \(m\): field 'metafilesPrefix': .*s3 and filesystem destinations only"):
        load_config(write_config({"destinations": [{"name": "m", "type": "memo", "metafilesPrefix": "meta/"}]}))


def test_a_plugin_that_fails_to_import_names_its_entry_point(site, write_config) -> None:
    fake_distribution(site, "broken-plugin", {"broken": "no_such_module_xyz:plugin"})
    path = write_config({"destinations": [{"name": "b", "type": "broken"}]})
    with pytest.raises(Exception) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}: destinations[0] (b): field 'type': plugin 'broken'" in message
    assert "entry point broken = no_such_module_xyz:plugin from broken-plugin 0.1" in message
    assert "failed to import: ModuleNotFoundError" in message
    # a config that does not use the broken type is not affected
    assert load_config(write_config({"sources": [{"name": "f", "type": "filesystem", "path": "/tmp"}]})).sources


def test_two_plugins_with_one_name_are_an_error_naming_both(site, write_config) -> None:
    fake_distribution(site, "twin-a", {"memo": "memo_plugin:plugin"}, {"memo_plugin": MEMO_MODULE})
    fake_distribution(site, "twin-b", {"memo": "memo_plugin_b:plugin"})
    with pytest.raises(Exception) as info:
        load_config(write_config({"sources": [{"name": "m", "type": "memo"}]}))
    message = str(info.value)
    assert "field 'type': type 'memo' is registered twice" in message
    assert "memo = memo_plugin:plugin from twin-a 0.1" in message and "memo = memo_plugin_b:plugin from twin-b 0.1" in message


def test_a_package_registering_a_builtin_name_again_makes_that_type_ambiguous(site, write_config) -> None:
    fake_distribution(site, "rogue", {"s3": "memo_plugin:plugin"}, {"memo_plugin": MEMO_MODULE})
    with pytest.raises(Exception, match="field 'type': type 's3' is registered twice") as info:
        load_config(write_config({"sources": [{"name": "s", "type": "s3", "bucket": "b"}]}))
    assert "s3 = ingest_pipelines.plugins.builtin:s3 from ingest_pipelines" in str(info.value)
    assert "s3 = memo_plugin:plugin from rogue 0.1" in str(info.value)


def test_an_entry_point_that_is_not_a_plugin_or_names_another_type(site, write_config) -> None:
    fake_distribution(site, "odd", {"odd": "json:dumps", "alias": "ingest_pipelines.plugins.builtin:s3"})
    with pytest.raises(Exception, match=r"field 'type': plugin 'odd' \(entry point odd = json:dumps from odd 0.1\) is a function, not"):
        load_config(write_config({"sources": [{"name": "o", "type": "odd"}]}))
    with pytest.raises(Exception, match="declares type 's3'; the entry point name and `type` must be the same"):
        load_config(write_config({"sources": [{"name": "a", "type": "alias", "bucket": "b"}]}))


def test_unknown_type_lists_the_known_ones_and_the_broken_plugins(site, write_config) -> None:
    fake_distribution(site, "broken-plugin", {"broken": "no_such_module_xyz:plugin"})
    with pytest.raises(Exception) as info:
        load_config(write_config({"sources": [{"name": "src", "type": "ftp"}]}))
    message = str(info.value)
    assert "sources[0] (src): field 'type': unknown type 'ftp' (known: filesystem, http, s3)" in message
    assert "not loadable: plugin 'broken'" in message


def test_a_type_in_the_wrong_role(write_config) -> None:
    http = {"name": "h", "type": "http", "url": "http://127.0.0.1:9/items", "downloadUrl": "/items/{id}"}
    with pytest.raises(
        Exception, match=r"destinations\[0\] \(h\): field 'type': unknown type 'http' for a destination \(it is a source type\)"
    ):
        load_config(write_config({"destinations": [http]}))
    with pytest.raises(Exception, match=r"state\[0\] \(h\): field 'type': unknown type 'http' for a state store \(it is a source type\)"):
        load_config(write_config({"state": http}))


def test_open_store_builds_plugin_sources_and_destinations_by_role(site, write_config) -> None:
    fake_distribution(site, "memo-plugin", {"memo": "memo_plugin:plugin"}, {"memo_plugin": MEMO_MODULE})
    config = load_config(write_config({"sources": [{"name": "m", "type": "memo"}], "destinations": [{"name": "d", "type": "memo"}]}))
    assert isinstance(open_store(config.source("m"), role="source"), ElementSourceStore)
    assert isinstance(open_store(config.destination("d"), role="destination"), ElementDestinationStore)
    with pytest.raises(StoreError, match="both a source and a destination plugin"):
        open_store(config.source("m"))
    with pytest.raises(StoreError, match="cannot be used as a state"):
        open_store(config.source("m"), role="state")


def test_cli_lists_installed_types_with_their_keys(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ingest_pipelines.cli", "plugins"], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "http  [source]  entry point http = ingest_pipelines.plugins.http:plugin from ingest_pipelines" in out
    assert "s3  [source, destination, state]" in out and "s3-records  [destination]" in out
    http_block = out.split("http  [source]")[1].split("\n\n")[0]
    assert "downloadUrl" in http_block and "required" in http_block.split("downloadUrl")[1].splitlines()[0]
    assert "secret ($VAR)" in http_block.split("token")[1].splitlines()[0]

    as_json = subprocess.run(
        [sys.executable, "-m", "ingest_pipelines.cli", "plugins", "--json"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    entries = {entry["type"]: entry for entry in json.loads(as_json.stdout)}
    assert BUILTINS <= set(entries)
    assert {k["key"] for k in entries["http"]["keys"]} >= {"url", "paging", "idField", "versionField", "downloadUrl", "token"}


def test_cli_names_a_broken_plugin_and_fails(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_distribution(site, "broken-plugin", {"broken": "no_such_module_xyz:plugin"})
    env = subprocess_env()
    env["PYTHONPATH"] = f"{site}:{env['PYTHONPATH']}"
    result = subprocess.run([sys.executable, "-m", "ingest_pipelines.cli", "plugins"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "broken  [cannot be loaded]" in result.stdout and "entry point broken = no_such_module_xyz:plugin" in result.stdout
    assert "http  [source]" in result.stdout  # the others are still listed


def test_the_minimal_plugin_of_the_docs_works(http_server, monkeypatch) -> None:
    """docs/plugins.md's minimal plugin, as written there, against a notes API on loopback."""
    import types

    from ingest_pipelines.config import parse_config
    from ingest_pipelines.plugins import Element, ElementNotFound
    from ingest_pipelines.testing.http_server import Response

    text = (Path(__file__).resolve().parent.parent / "docs" / "plugins.md").read_text()
    code = text.split("## A minimal plugin", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 30 <= len(code.strip().splitlines()) <= 50
    module = types.ModuleType("notes_plugin")
    exec(compile(code, "docs/plugins.md", "exec", dont_inherit=True), module.__dict__)  # as its own file would be

    notes = {"1": ("2024-05-01", b"first"), "2": ("2024-05-02", b"second"), "3": ("2024-05-03", b"third")}
    deleted = []

    def handler(request):
        if request.headers.get("Authorization") != "Bearer n0tes":
            return Response(401, {})
        parts = [p for p in request.path.split("/") if p]
        if parts == ["api", "notes"]:
            page = int(request.query["page"][0])
            chunk = sorted(notes)[(page - 1) * 2 : page * 2]
            return Response(200, {"notes": [{"id": int(i), "updated": notes[i][0], "bytes": len(notes[i][1])} for i in chunk]})
        if request.method == "GET" and parts[-1] == "text":
            return Response(200, notes[parts[2]][1], {"Content-Type": "text/plain"}) if parts[2] in notes else Response(404, {})
        if request.method == "DELETE":
            deleted.append(parts[2])
            return Response(204 if notes.pop(parts[2], None) else 404, b"")
        return Response(404, {})

    server = http_server(handler)
    monkeypatch.setenv("NOTES_TOKEN", "n0tes")
    REGISTRY.register("notes", module.plugin)
    try:
        config = parse_config(
            {"sources": [{"name": "notes", "type": "notes", "url": f"{server.url}/api", "token": "$NOTES_TOKEN"}]}, "x.yaml"
        )
        source = open_store(config.source("notes"), role="source")
        listed, position = [], None
        while True:
            page, position = source.enumerate_page(position)
            listed += [(e.key, e.version, e.size) for e in page]
            if position is None:
                break
        assert listed == [("1", "2024-05-01", 5), ("2", "2024-05-02", 6), ("3", "2024-05-03", 5)]
        stream, content_type, _ = source.open_element("2", "2024-05-02")
        assert stream.read() == b"second" and content_type == "text/plain"
        source.clean_up_element("2", "2024-05-02")
        source.clean_up_element("2", "2024-05-02")  # idempotent
        assert deleted == ["2", "2"] and "2" not in notes
        with pytest.raises(ElementNotFound):
            module.NotesSource(config.source("notes")).download(Element("2", ""))
    finally:
        REGISTRY.unregister("notes")


def test_a_code_location_with_an_http_source_validates_with_the_dagster_cli(tmp_path: Path, write_config) -> None:
    document = {
        "sources": [
            {"name": "api", "type": "http", "url": "http://127.0.0.1:9/items", "downloadUrl": "/items/{id}", "token": "$SOME_TOKEN"}
        ],
        "destinations": [{"name": "out", "type": "filesystem", "path": str(tmp_path / "out")}],
        "workflows": [{"name": "api-sync", "source": "api", "destinations": ["out"]}],
    }
    path = write_config(document)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "ingest_pipelines.definitions"],
        cwd=tmp_path,
        env=subprocess_env(INGEST_CONFIG=str(path)),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Validation successful" in result.stdout + result.stderr
