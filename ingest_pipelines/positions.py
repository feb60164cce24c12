"""Conduit positions (`{key}_s{unix}` / `{key}_c{unix}`) and the sync sensor's cursor (compact JSON).

A position names one change; the cursor carries more: mode, snapshot progress, the listing pass, the watermark.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import orjson

SNAPSHOT = "s"
CDC = "c"


class PositionError(ValueError):
    """A position or cursor string that cannot be parsed; the message quotes it and says why."""


@dataclass(frozen=True)
class Position:
    """`key` + mode letter (`s` snapshot, `c` CDC) + a unix timestamp in seconds (Conduit's format)."""

    key: str
    mode: Literal["s", "c"]
    timestamp: int

    @classmethod
    def parse(cls, text: str) -> Position:
        """Split on the LAST `_`: keys may contain `_`, the suffix never does."""
        if not isinstance(text, str):
            raise PositionError(f"position must be a string, got {type(text).__name__}")
        key, sep, suffix = text.rpartition("_")
        if not sep:
            raise PositionError(f"position {text!r}: missing '_' before the type letter and timestamp")
        if not suffix:
            raise PositionError(f"position {text!r}: missing type letter and timestamp after the last '_'")
        mode, digits = suffix[0], suffix[1:]
        if mode not in (SNAPSHOT, CDC):
            raise PositionError(f"position {text!r}: unknown type letter {mode!r} (expected 's' for snapshot or 'c' for CDC)")
        if not digits or not digits.isascii() or not digits.isdigit():
            raise PositionError(f"position {text!r}: timestamp {digits!r} is not a unix time in whole seconds")
        return cls(key=key, mode=mode, timestamp=int(digits))  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.key}_{self.mode}{self.timestamp}"


def format_position(key: str, mode: Literal["s", "c"], timestamp: float) -> str:
    return str(Position(key, mode, int(timestamp)))


@dataclass(frozen=True)
class Watermark:
    """How far the emitted changes reach: the greatest (LastModified second, key) emitted, plus every
    key emitted within that second. Listings report whole seconds, so an object written in the
    watermark's second after the listing passed it sorts *below* (second, key) by key alone: the
    boundary set is what tells "already emitted" from "new in the same second"."""

    second: int = -1
    key: str = ""
    boundary: frozenset[str] = frozenset()

    def covers(self, second: int, key: str) -> bool:
        """True when (second, key) was emitted already; False means it is new to the watermark."""
        if second < self.second:
            return True
        if second == self.second:
            return key in self.boundary
        return False

    def advance(self, second: int, key: str) -> Watermark:
        """The watermark after emitting (second, key)."""
        if second > self.second:
            return Watermark(second, key, frozenset([key]))
        if second == self.second:
            return Watermark(second, max(key, self.key), self.boundary | {key})
        return self

    def to_json(self) -> list[Any]:
        return [self.second, self.key, sorted(self.boundary)]

    @classmethod
    def from_json(cls, value: Any) -> Watermark:
        if not value:
            return cls()
        second, key, boundary = value
        return cls(int(second), str(key), frozenset(boundary))


@dataclass(frozen=True)
class SyncCursor:
    """The sync sensor's cursor. `tick` counts committed ticks (the ledger's scan state holds the
    same document; a Dagster cursor behind it means the last tick's run requests must be re-sent).

    mode: "snapshot" (walking `shards` in order, `shard` index + `after` key) or "cdc" (listing
    passes: `after` is the pass position, "" = start a new pass; events mode has no pass).
    """

    generation: str = ""
    tick: int = 0
    mode: Literal["snapshot", "cdc"] = "snapshot"
    shard: int = 0
    after: str = ""
    #: inside key `after`, the version id a versioned listing continues from.
    after_version: str = ""
    #: the largest LastModified (unix s) seen during the snapshot: the `s{ts}` of snapshot positions.
    snapshot_max: int = 0
    passes: int = 0
    watermark: Watermark = field(default_factory=Watermark)
    #: when the current (or last) change-capture pass started, unix seconds: passes start `interval` apart.
    pass_started: float = 0.0
    #: a plugin source's pass has enumerated everything and is sweeping the key index for keys it did not see:
    #: the last key swept ("" = from the start); None = not sweeping.
    sweep: str | None = None

    def to_json(self) -> str:
        doc = {
            "v": 1,
            "gen": self.generation,
            "tick": self.tick,
            "mode": self.mode,
            "shard": self.shard,
            "after": self.after,
            "av": self.after_version,
            "smax": self.snapshot_max,
            "passes": self.passes,
            "wm": self.watermark.to_json(),
            "ps": self.pass_started,
        }
        if self.sweep is not None:
            doc["sw"] = self.sweep
        return orjson.dumps(doc).decode()

    @classmethod
    def from_json(cls, text: str | None) -> SyncCursor:
        if not text:
            return cls()
        try:
            doc = orjson.loads(text)
            if doc.get("v") != 1:
                raise PositionError(f"sync cursor version {doc.get('v')!r} is not supported")
            return cls(
                generation=str(doc["gen"]),
                tick=int(doc["tick"]),
                mode=doc["mode"],
                shard=int(doc["shard"]),
                after=str(doc["after"]),
                after_version=str(doc.get("av", "")),
                snapshot_max=int(doc["smax"]),
                passes=int(doc["passes"]),
                watermark=Watermark.from_json(doc["wm"]),
                pass_started=float(doc.get("ps", 0.0)),
                sweep=None if doc.get("sw") is None else str(doc["sw"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, PositionError):
                raise
            raise PositionError(f"sync cursor {text[:80]!r} is not valid: {exc}") from exc

    def evolve(self, **changes: Any) -> SyncCursor:
        return replace(self, **changes)
