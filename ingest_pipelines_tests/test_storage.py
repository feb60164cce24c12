"""Object stores (S3 on the moto server, a local folder) and the JSON state store on top of them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import StoreError, open_store


@pytest.fixture
def s3_store(s3, s3_server):
    s3.create_bucket(Bucket="store")
    return open_store(S3StoreConfig(name="s", bucket="store", prefix="p/", endpoint=s3_server.endpoint_url))


@pytest.fixture
def fs_store(tmp_path: Path):
    return open_store(FilesystemStoreConfig(name="f", path=str(tmp_path / "root"), prefix="p/"))


@pytest.mark.parametrize("store_name", ["s3_store", "fs_store"])
def test_round_trip_list_head_delete(request, store_name: str) -> None:
    store = request.getfixturevalue(store_name)
    store.put_bytes("b/2.txt", b"two", content_type="text/plain")
    store.put_bytes("a.txt", b"one")
    store.upload_fileobj("b/1 odd key+%.txt", io.BytesIO(b"x" * 10))
    keys = [info.key for info in store.list()]
    assert keys == ["a.txt", "b/1 odd key+%.txt", "b/2.txt"]
    assert [info.key for info in store.list(prefix="b/", start_after="b/1 odd key+%.txt")] == ["b/2.txt"]
    page, more = store.list_page(max_keys=2)
    assert [i.key for i in page] == ["a.txt", "b/1 odd key+%.txt"] and more
    assert store.get_bytes("b/2.txt") == b"two"
    assert store.head("b/1 odd key+%.txt").size == 10
    assert store.head("missing") is None
    store.delete("a.txt")
    store.delete("a.txt")  # idempotent
    assert store.head("a.txt") is None


def test_s3_keys_are_under_the_prefix(s3, s3_store) -> None:
    s3_store.put_bytes("k", b"v")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="store")["Contents"]] == ["p/k"]
    assert s3_store.uri("k") == "s3://store/p/k"


def test_filesystem_refuses_keys_outside_root(fs_store) -> None:
    with pytest.raises(StoreError, match="outside"):
        fs_store.put_bytes("../../escape", b"x")


def test_filesystem_write_is_atomic_on_failure(fs_store) -> None:
    class Broken(io.RawIOBase):
        def readinto(self, buffer):
            raise OSError("disk went away")

    with pytest.raises(OSError):
        fs_store.upload_fileobj("x", Broken())
    assert list(fs_store.list()) == []


@pytest.mark.parametrize("store_name", ["s3_store", "fs_store"])
def test_state_store_json(request, store_name: str) -> None:
    state = StateStore(request.getfixturevalue(store_name))
    assert state.get_json("wf/cursor.json") is None
    state.put_json("wf/cursor.json", {"b": 1, "a": [1, 2]})
    assert state.get_json("wf/cursor.json") == {"a": [1, 2], "b": 1}
    assert list(state.keys("wf/")) == ["wf/cursor.json"]


@pytest.mark.parametrize(
    "value",
    ["2026-12-06T22:48:40.000Z", "2026-12-06T22:48:40Z", "2026-12-06T22:48:40.123456+02:00", "Sun, 06 Dec 2026 22:48:40 GMT", "1700000000"],
)
def test_timestamps_parse_as_botocore_parses_them(value: str) -> None:
    from botocore.utils import parse_timestamp as botocore_timestamp

    from ingest_pipelines.storage.s3 import parse_timestamp

    assert parse_timestamp(value) == botocore_timestamp(value)


def test_listing_and_head_timestamps_through_the_fast_parser(s3_store) -> None:
    """S3's listings carry ISO 8601 times and HEAD an HTTP date: both come back as aware datetimes, the same."""
    s3_store.put_bytes("t.txt", b"x")
    listed = s3_store.client.list_objects_v2(Bucket="store", Prefix="p/t.txt")["Contents"][0]["LastModified"]
    head = s3_store.client.head_object(Bucket="store", Key="p/t.txt")["LastModified"]
    assert listed.tzinfo is not None and listed == head
