"""Conduit positions, the watermark with its boundary set, and the sync cursor's compact JSON."""

from __future__ import annotations

import pytest

from ingest_pipelines.positions import Position, PositionError, SyncCursor, Watermark, format_position


@pytest.mark.parametrize(
    ("text", "key", "mode", "ts"),
    [
        ("thisIsAKey_s12345", "thisIsAKey", "s", 12345),
        ("thisIsAKey_c1634049397", "thisIsAKey", "c", 1634049397),
        ("dir/a_b_c.txt_c1634049397", "dir/a_b_c.txt", "c", 1634049397),  # split on the LAST '_'
        ("_s0", "", "s", 0),
        ("with space+%é//x_c1", "with space+%é//x", "c", 1),
    ],
)
def test_parse_and_print_round_trip(text: str, key: str, mode: str, ts: int) -> None:
    position = Position.parse(text)
    assert (position.key, position.mode, position.timestamp) == (key, mode, ts)
    assert str(position) == text
    assert format_position(key, mode, ts + 0.9) == text  # whole seconds, truncated


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("noUnderscore", "missing '_'"),
        ("key_", "missing type letter"),
        ("key_x123", "unknown type letter 'x'"),
        ("key_s", "timestamp '' is not a unix time"),
        ("key_s12a", "timestamp '12a' is not a unix time"),
        ("key_c-5", "timestamp '-5' is not a unix time"),
        ("key_c1.5", "timestamp '1.5' is not a unix time"),
    ],
)
def test_bad_positions_say_why(text: str, reason: str) -> None:
    with pytest.raises(PositionError) as info:
        Position.parse(text)
    assert reason in str(info.value)
    assert repr(text) in str(info.value)


def test_watermark_boundary_set_keeps_same_second_objects_apart() -> None:
    mark = Watermark().advance(100, "m")
    assert mark.covers(100, "m")
    # Conduit compares (LastModified > checkpoint): "a" written in the same second after "m" was
    # emitted would be skipped; the boundary set says it is new
    assert not mark.covers(100, "a")
    assert not mark.covers(100, "z")
    mark = mark.advance(100, "a")
    assert mark.covers(100, "a") and mark.key == "m"
    assert mark.covers(99, "anything")
    later = mark.advance(101, "b")
    assert later.boundary == frozenset({"b"}) and not later.covers(101, "c")
    assert Watermark.from_json(later.to_json()) == later


def test_cursor_round_trips_as_compact_json() -> None:
    cursor = SyncCursor(
        generation="abc123",
        tick=7,
        mode="cdc",
        after="k/ey 1",
        snapshot_max=5,
        passes=2,
        watermark=Watermark(10, "k", frozenset({"k", "j"})),
    )
    text = cursor.to_json()
    assert " " not in text.replace("k/ey 1", "")
    assert SyncCursor.from_json(text) == cursor
    assert SyncCursor.from_json(None) == SyncCursor()


@pytest.mark.parametrize("text", ["{", '{"v": 2}', '{"v": 1}', "[]"])
def test_bad_cursor_is_a_position_error(text: str) -> None:
    with pytest.raises(PositionError):
        SyncCursor.from_json(text)
