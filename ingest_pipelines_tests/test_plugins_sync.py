"""Sync with plugin sources and destinations, without Dagster: change detection over an enumeration in any order
(passes, deletes swept after a complete pass, resumed across ticks within the tick budget), pages that shift while
they are read, a plugin destination (holds/store/delete), cleanUp through the plugin, and a failing download.

The plugins here are registered in-process (their entry points are tested in test_plugins*.py)."""

from __future__ import annotations

import io
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import pytest

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.plugins import REGISTRY, Download, Element, ElementNotFound, ElementPage, Plugin, PluginConfig, PluginError
from ingest_pipelines.positions import SyncCursor
from ingest_pipelines.storage import open_store
from ingest_pipelines.sync.apply import BatchApplier, Destination, SyncApplyError
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger
from ingest_pipelines.sync.tick import run_tick
from ingest_pipelines.sync.verify import destinations_match

#: the data behind each in-process plugin, by `pool:` name.
POOLS: dict[str, Any] = {}


class Catalog:
    """An API's elements, newest first (not by id); pages are offsets, so they shift when an element goes."""

    def __init__(self, page_size: int = 2, with_exists: bool = True):
        self.items: dict[str, tuple[str, bytes]] = {}
        self.page_size = page_size
        self.with_exists = with_exists
        self.failing: set[str] = set()
        self.cleaned: list[str] = []
        self.lock = threading.Lock()

    def put(self, element_id: str, body: bytes) -> None:
        old = self.items.get(element_id)
        self.items[element_id] = (f"v{int(old[0][1:]) + 1}" if old else "v1", body)

    def order(self) -> list[str]:
        return list(reversed(self.items))  # newest first, as many APIs list


class CatalogConfig(PluginConfig):
    type: Literal["catalog"] = "catalog"
    pool: str


class CatalogSource:
    def __init__(self, config: CatalogConfig):
        self.catalog: Catalog = POOLS[config.pool]
        if self.catalog.with_exists:
            self.exists = lambda element: element.id in self.catalog.items

    def list_elements(self, position: str | None) -> ElementPage:
        start = int(position or 0)
        ids = self.catalog.order()[start : start + self.catalog.page_size]
        following = start + self.catalog.page_size
        elements = [Element(i, self.catalog.items[i][0], size=len(self.catalog.items[i][1])) for i in ids]
        return ElementPage(elements, str(following) if following < len(self.catalog.items) else None)

    def download(self, element: Element) -> Download:
        if element.id in self.catalog.failing:
            raise PluginError(f"catalog: download of {element.id!r} failed: HTTP 500")
        if element.id not in self.catalog.items:
            raise ElementNotFound(element.id)
        version, body = self.catalog.items[element.id]
        return Download(io.BytesIO(body), content_type="text/plain", version=version)

    def clean_up(self, element: Element) -> None:
        with self.catalog.lock:
            self.catalog.items.pop(element.id, None)
            self.catalog.cleaned.append(element.id)


class ShelfConfig(PluginConfig):
    type: Literal["shelf"] = "shelf"
    pool: str
    deletes: bool = False


class Shelf:
    """A destination plugin: key -> (version, bytes)."""

    def __init__(self, config: ShelfConfig):
        self.rows: dict[str, tuple[str, bytes]] = POOLS[config.pool]
        self.stores = POOLS.setdefault(config.pool + ":stores", [])

    def holds(self, key: str, version: str) -> bool:
        return key in self.rows and self.rows[key][0] == version

    def store(self, key: str, element: Element, download: Download) -> None:
        self.rows[key] = (element.version, download.stream.read())
        self.stores.append(key)

    def delete(self, key: str) -> None:
        self.rows.pop(key, None)


@pytest.fixture(autouse=True)
def plugins():
    REGISTRY.register("catalog", Plugin(config=CatalogConfig, source=CatalogSource))
    REGISTRY.register("shelf", Plugin(config=ShelfConfig, destination=Shelf))
    yield
    REGISTRY.unregister("catalog")
    REGISTRY.unregister("shelf")
    POOLS.clear()


class Rig:
    def __init__(self, tmp_path: Path, catalog: Catalog, *, shelf: bool = True, folder: bool = False, **options: Any):
        POOLS["cat"] = catalog
        POOLS["shelf"] = {}
        self.source_config = CatalogConfig(name="cat", pool="cat")
        dests = []
        if shelf:
            dests.append(ShelfConfig(name="shelf", pool="shelf", deletes=True))
        if folder:
            dests.append(FilesystemStoreConfig(name="folder", path=str(tmp_path / "folder"), deletes=True))
        options = {"settleDelay": 0, "batchSize": 100, "interval": 0.001, **options}  # a pass at every tick
        self.workflow = SyncWorkflow(name="wf", source="cat", destinations=[d.name for d in dests], **options)
        self.source = open_store(self.source_config, role="source")
        self.ledger = SyncLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        self.destinations = [Destination(d.name, d, open_store(d, role="destination")) for d in dests]
        self.applier = BatchApplier(self.workflow, self.source, self.destinations, self.ledger)
        self.cursor: str | None = None
        self.outcomes: list[Any] = []

    @property
    def shelf(self) -> dict[str, tuple[str, bytes]]:
        return POOLS["shelf"]

    def tick(self) -> list[tuple[str, str]]:
        outcome = run_tick(self.workflow, self.source, self.ledger)
        self.cursor = outcome.cursor.to_json()
        self.outcomes.append(outcome)
        return [(c.operation, c.key) for b in outcome.batches for c in b.changes]

    def until_pass_complete(self, max_ticks: int = 50, apply: bool = True) -> list[tuple[str, str]]:
        """Tick (applying each tick's batches) until a change-capture pass completes; all changes seen."""
        seen: list[tuple[str, str]] = []
        start = SyncCursor.from_json(self.cursor).passes if self.cursor else 0
        for _ in range(max_ticks):
            seen += self.tick()
            if apply:
                for batch in self.outcomes[-1].batches:
                    self.applier.apply(batch)
            cursor = SyncCursor.from_json(self.cursor)
            if cursor.mode == "cdc" and cursor.passes > start:
                return seen
        raise AssertionError(f"no pass completed in {max_ticks} ticks")


def test_enumeration_in_any_order_finds_creates_updates_and_deletes(tmp_path) -> None:
    catalog = Catalog(page_size=2)
    for name in ["m", "c", "x", "a", "q"]:
        catalog.put(name, name.encode())
    rig = Rig(tmp_path, catalog, maxPagesPerTick=1)
    assert catalog.order() != sorted(catalog.order())
    snapshot = rig.until_pass_complete()
    assert sorted(snapshot) == [("snapshot", k) for k in "acmqx"]
    assert {k: v for k, (_, v) in rig.shelf.items()} == {k: k.encode() for k in "acmqx"}
    assert all(o.pages <= 1 for o in rig.outcomes)  # maxPagesPerTick bounds every tick

    catalog.put("c", b"c2")
    del catalog.items["x"]
    catalog.put("b", b"b")
    changes = rig.until_pass_complete()
    assert sorted(changes) == [("create", "b"), ("delete", "x"), ("update", "c")]
    assert {k: v for k, (_, v) in rig.shelf.items()} == {k: v for k, (_, v) in catalog.items.items()}
    assert rig.shelf["c"][0] == "v2"
    assert rig.ledger.index_count("wf") == 5
    assert rig.until_pass_complete() == []  # nothing new: nothing emitted


def test_enumeration_resumes_from_its_saved_position_across_ticks(tmp_path) -> None:
    catalog = Catalog(page_size=2)
    for i in range(7):
        catalog.put(f"e{i}", b"x")
    rig = Rig(tmp_path, catalog, maxPagesPerTick=1)
    rig.until_pass_complete()
    positions = []
    for _ in range(4):
        rig.tick()
        positions.append(SyncCursor.from_json(rig.cursor).after)
    assert positions == ["2", "4", "6", ""]  # one page per tick, each from the position the last one saved
    assert SyncCursor.from_json(rig.cursor).sweep == ""  # enumeration done: the delete sweep starts


def test_the_delete_sweep_is_bounded_and_resumes(tmp_path) -> None:
    catalog = Catalog(page_size=10)
    for i in range(7):
        catalog.put(f"k{i}", b"x")
    rig = Rig(tmp_path, catalog, maxPagesPerTick=1, pageSize=2)
    rig.until_pass_complete()
    for gone in ("k1", "k5", "k6"):
        del catalog.items[gone]
    ticks_before = len(rig.outcomes)
    changes = rig.until_pass_complete()
    assert sorted(changes) == [("delete", "k1"), ("delete", "k5"), ("delete", "k6")]
    # one enumeration page, then 7 index keys swept 2 per tick (4 sweep pages)
    assert len(rig.outcomes) - ticks_before == 5
    assert set(rig.shelf) == {"k0", "k2", "k3", "k4"}


def test_an_element_skipped_by_a_shifting_page_is_not_deleted(tmp_path) -> None:
    catalog = Catalog(page_size=2)
    for name in ["p1", "p2", "p3", "p4", "p5", "p6"]:
        catalog.put(name, b"x")
    rig = Rig(tmp_path, catalog, maxPagesPerTick=1)
    rig.until_pass_complete()
    order = catalog.order()
    rig.tick()  # pass 2 reads its first page: order[0], order[1]
    del catalog.items[order[0]]  # everything after it moves up one place: order[2] is now on page 1, already read
    assert rig.until_pass_complete() == []  # pass 2 did not see order[2], but `exists` says it is there
    assert rig.until_pass_complete() == [("delete", order[0])]  # pass 3 did not see order[0]: it is gone
    assert set(rig.shelf) == set(catalog.items)


def test_without_exists_a_skipped_element_is_deleted_and_created_again(tmp_path) -> None:
    catalog = Catalog(page_size=2, with_exists=False)
    for name in ["p1", "p2", "p3", "p4", "p5", "p6"]:
        catalog.put(name, b"x")
    rig = Rig(tmp_path, catalog, maxPagesPerTick=1)
    rig.until_pass_complete()
    order = catalog.order()
    rig.tick()
    del catalog.items[order[0]]
    assert rig.until_pass_complete() == [("delete", order[2])]  # pass 2 skipped it: taken as deleted
    assert sorted(rig.until_pass_complete()) == sorted([("delete", order[0]), ("create", order[2])])  # pass 3 sees it again
    assert set(rig.shelf) == set(catalog.items)


def test_plugin_destination_stores_each_version_once_and_deletes(tmp_path) -> None:
    catalog = Catalog(page_size=5)
    catalog.put("a", b"1")
    catalog.put("b", b"2")
    rig = Rig(tmp_path, catalog)
    rig.until_pass_complete()
    assert POOLS["shelf:stores"] == ["a", "b"]
    batch = rig.outcomes[0].batches[0]
    again = rig.applier.apply(batch)  # a re-run of the same batch: the ledger skips it
    assert again.skipped_already_applied == 2 and POOLS["shelf:stores"] == ["a", "b"]
    check = destinations_match("wf", [batch], rig.source, rig.destinations, rig.ledger)
    assert check.passed and check.checked == 2

    # a snapshot-style re-apply under a new batch finds both present at their version
    fresh = BatchApplier(rig.workflow, rig.source, rig.destinations, rig.ledger)

    result = fresh.apply(replace(batch, id=batch.id + "-again"))
    assert result.already_present == 2 and result.copied == 0 and POOLS["shelf:stores"] == ["a", "b"]

    del catalog.items["a"]
    assert rig.until_pass_complete() == [("delete", "a")]
    assert set(rig.shelf) == {"b"}


def test_clean_up_goes_through_the_plugin_and_is_not_a_delete(tmp_path) -> None:
    catalog = Catalog(page_size=5)
    catalog.put("a", b"1")
    catalog.put("b", b"2")
    rig = Rig(tmp_path, catalog, cleanUp=True)
    rig.until_pass_complete()
    assert sorted(catalog.cleaned) == ["a", "b"] and catalog.items == {}
    assert rig.until_pass_complete() == []  # gone on purpose: no delete change
    assert set(rig.shelf) == {"a", "b"}
    assert rig.ledger.index_count("wf") == 0


def test_a_failing_download_fails_its_change_and_the_rest_is_applied(tmp_path) -> None:
    catalog = Catalog(page_size=5)
    for name in ("ok1", "bad", "ok2"):
        catalog.put(name, name.encode())
    catalog.failing.add("bad")
    rig = Rig(tmp_path, catalog, folder=True)
    rig.tick()
    (batch,) = rig.outcomes[0].batches
    with pytest.raises(SyncApplyError, match=r"bad -> shelf: PluginError: catalog: download of 'bad' failed: HTTP 500"):
        rig.applier.apply(batch)
    assert set(rig.shelf) == {"ok1", "ok2"}
    catalog.failing.clear()
    result = rig.applier.apply(batch)  # the retry does only what is missing
    assert result.copied == 2 and result.skipped_already_applied == 4
    assert set(rig.shelf) == {"ok1", "bad", "ok2"}
    assert (tmp_path / "folder" / "bad").read_bytes() == b"bad"


def test_an_element_gone_before_its_batch_runs_is_source_missing(tmp_path) -> None:
    catalog = Catalog(page_size=5)
    catalog.put("a", b"1")
    catalog.put("b", b"2")
    rig = Rig(tmp_path, catalog, folder=True)
    rig.tick()
    del catalog.items["a"]
    result = rig.applier.apply(rig.outcomes[0].batches[0])
    assert result.source_missing == 2 and result.copied == 2  # a: missing for both destinations
    assert rig.until_pass_complete() == [("delete", "a")]


def test_ids_become_safe_keys_in_a_folder_destination(tmp_path) -> None:
    catalog = Catalog(page_size=10)
    for name in ("../../outside", "a/b", "/abs", ".."):
        catalog.put(name, name.encode())
    rig = Rig(tmp_path, catalog, shelf=False, folder=True)
    rig.until_pass_complete()
    files = {p.relative_to(tmp_path / "folder").as_posix(): p.read_bytes() for p in (tmp_path / "folder").rglob("*") if p.is_file()}
    assert files == {"..%2F..%2Foutside": b"../../outside", "a/b": b"a/b", "%2Fabs": b"/abs", "%2E%2E": b".."}
    assert not (tmp_path / "outside").exists()


def test_snapshot_shards_over_an_enumerated_source(tmp_path) -> None:
    catalog = Catalog(page_size=2)
    for name in ("img/1", "img/2", "doc/1", "other"):
        catalog.put(name, b"x")
    rig = Rig(tmp_path, catalog, shards=["img/", "doc/"])
    rig.until_pass_complete(apply=False)
    snapshot = [b for o in rig.outcomes for b in o.batches if b.asset == "snapshot"]
    assert {b.partition: sorted(c.key for c in b.changes) for b in snapshot} == {"img/": ["img/1", "img/2"], "doc/": ["doc/1"]}
    changes = [(c.operation, c.key) for o in rig.outcomes for b in o.batches if b.asset == "changes" for c in b.changes]
    assert changes == [("create", "other")]  # outside every shard: change capture picks it up


class LooseSource:
    """A plugin written loosely: numbers for ids and positions, datetimes, bytes instead of a stream."""

    def __init__(self, config: CatalogConfig):
        self.pages = [[1, 2], [3]]

    def list_elements(self, position):
        index = int(position or 0)
        from datetime import UTC, datetime

        elements = [Element(n, 7, modified=datetime(2024, 5, 1, tzinfo=UTC)) for n in self.pages[index]]  # type: ignore[arg-type]
        return ElementPage(elements, index + 1 if index + 1 < len(self.pages) else None)  # type: ignore[arg-type]

    def download(self, element: Element) -> Download:
        return Download(f"element {element.id}".encode())  # type: ignore[arg-type]


def test_a_loosely_written_plugin_still_syncs(tmp_path) -> None:
    REGISTRY.register("catalog", Plugin(config=CatalogConfig, source=LooseSource))
    rig = Rig(tmp_path, Catalog())
    rig.until_pass_complete()
    assert {k: v for k, (_, v) in rig.shelf.items()} == {"1": b"element 1", "2": b"element 2", "3": b"element 3"}
    assert {v for v, _ in rig.shelf.values()} == {"7"}
    change = rig.outcomes[0].batches[0].changes[0]
    assert change.changed_at == 1714521600.0 and change.position.endswith("_s1714521600")


def test_an_element_changed_after_it_was_listed_is_superseded_and_its_new_version_copied_once(tmp_path) -> None:
    catalog = Catalog(page_size=5)
    catalog.put("doc", b"first")
    rig = Rig(tmp_path, catalog, folder=True)
    rig.tick()
    catalog.put("doc", b"second")  # v2 before the batch of v1 runs
    result = rig.applier.apply(rig.outcomes[0].batches[0])
    assert result.superseded == 2 and result.copied == 0 and POOLS["shelf:stores"] == []
    assert not (tmp_path / "folder" / "doc").exists()  # never the new content under the old version
    assert rig.until_pass_complete() == [("update", "doc")]
    assert rig.shelf["doc"] == ("v2", b"second") and (tmp_path / "folder" / "doc").read_bytes() == b"second"
    assert POOLS["shelf:stores"] == ["doc"]
