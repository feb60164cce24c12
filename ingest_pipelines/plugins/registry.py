"""The type registry: every `type:` of ingest.yaml (built-in or not) is an entry point of the group
`ingest_pipelines.plugins` naming a `Plugin`; entry points load when a type is first used.

A plugin that fails to import, two entry points with one name, or an unknown name are `PluginError`s that say which
entry point (and distribution) is at fault; the config loader turns them into errors naming the file and the field.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ingest_pipelines.config import StoreConfig, secret_field_names

log = logging.getLogger(__name__)

#: the entry-point group plugins register under (name = the `type:` value).
ENTRY_POINT_GROUP = "ingest_pipelines.plugins"
#: this package's distribution name (its own entry points are the built-in types).
DISTRIBUTION = "ingest_pipelines"

Role = Literal["source", "destination", "state"]
ROLES: tuple[Role, ...] = ("source", "destination", "state")

#: the built-in registrations, as in pyproject.toml. Used only when this package's metadata lacks them (run from a
#: checkout that was never installed, or installed before the entry points existed), so `type: s3` still works.
BUILTIN_ENTRY_POINTS = {
    "s3": "ingest_pipelines.plugins.builtin:s3",
    "filesystem": "ingest_pipelines.plugins.builtin:filesystem",
    "s3-records": "ingest_pipelines.records.config:s3_records",
    "filesystem-records": "ingest_pipelines.records.config:filesystem_records",
    "http": "ingest_pipelines.plugins.http:plugin",
}


class PluginLoadError(RuntimeError):
    """A type's plugin cannot be used: its entry point fails to import, is not a Plugin, or has a rival."""


class UnknownType(KeyError):
    """No entry point (and no in-process registration) has this name, or none for this role."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown type"


@dataclass(frozen=True)
class Plugin:
    """What an entry point of the group names: a config model and what to build from it for each role.

    `source` / `destination` build a plugin Source / Destination (ingest_pipelines.plugins.protocols) from a
    validated config. The built-in object stores (s3, filesystem, record files) give `store` instead: an
    ObjectStore for every role in `store_roles` (they may also hold the workflow state)."""

    config: type[StoreConfig]
    source: Callable[[Any], Any] | None = None
    destination: Callable[[Any], Any] | None = None
    store: Callable[..., Any] | None = None
    store_roles: frozenset[str] = frozenset()
    summary: str = ""

    @property
    def roles(self) -> tuple[Role, ...]:
        have = set(self.store_roles)
        if self.source is not None:
            have.add("source")
        if self.destination is not None:
            have.add("destination")
        return tuple(role for role in ROLES if role in have)


@dataclass
class _Registration:
    name: str
    #: "name = module:attr (distribution version)", for messages.
    origin: str
    load: Callable[[], Any]
    plugin: Plugin | None = None
    error: str | None = None
    rivals: list[str] = field(default_factory=list)


def _origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" from {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value}{where}"


def _same_distribution(name: str | None) -> bool:
    return (name or "").lower().replace("-", "_") == DISTRIBUTION


class Registry:
    """Entry points of the group plus in-process registrations (tests, `register_*_type`), loaded lazily."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[str, _Registration] | None = None
        self._local: dict[str, Plugin] = {}

    # ------------------------------------------------------------------ discovery

    def _discover(self) -> dict[str, _Registration]:
        found: dict[str, list[importlib.metadata.EntryPoint]] = {}
        ours = False
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            ours = ours or _same_distribution(dist.name if dist else None)
            same = [o for o in found.get(ep.name, []) if o.value == ep.value]
            if not same:  # one distribution seen twice on sys.path (an egg-info beside a dist-info) is one entry
                found.setdefault(ep.name, []).append(ep)
        if not ours:
            log.warning(
                "%s is installed without its %r entry points; using the built-in list (reinstall: pip install -e .)",
                DISTRIBUTION,
                ENTRY_POINT_GROUP,
            )
            for name, value in BUILTIN_ENTRY_POINTS.items():
                found.setdefault(name, []).append(importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP))
        entries: dict[str, _Registration] = {}
        for name, eps in found.items():
            first, *others = eps
            entry = _Registration(name, _origin(first), first.load)
            if others:
                entry.rivals = [_origin(ep) for ep in others]
                entry.error = (
                    f"type {name!r} is registered twice: {'; '.join([entry.origin, *entry.rivals])} (uninstall one of the packages)"
                )
            entries[name] = entry
        return entries

    def _all(self) -> dict[str, _Registration]:
        with self._lock:
            if self._entries is None:
                self._entries = self._discover()
            return self._entries

    def refresh(self) -> None:
        """Forget what was discovered and loaded (after installing a package in this process)."""
        with self._lock:
            self._entries = None

    def register(self, name: str, plugin: Plugin) -> None:
        """An in-process registration (tests; code that builds its config without an installed package)."""
        with self._lock:
            self._local[name] = plugin

    def unregister(self, name: str) -> None:
        with self._lock:
            self._local.pop(name, None)

    def names(self) -> list[str]:
        return sorted(set(self._all()) | set(self._local))

    # ------------------------------------------------------------------ loading

    def plugin(self, name: str) -> Plugin:
        """The plugin of a type; UnknownType or PluginLoadError (naming the entry point) otherwise."""
        with self._lock:
            if name in self._local:
                return self._local[name]
            entry = self._all().get(name)
            if entry is None:
                raise UnknownType(f"unknown type {name!r}")
            if entry.plugin is None and entry.error is None:
                self._load(entry)
            if entry.error is not None:
                raise PluginLoadError(entry.error)
            assert entry.plugin is not None
            return entry.plugin

    def _load(self, entry: _Registration) -> None:
        try:
            loaded = entry.load()
        except Exception as exc:  # any import-time failure of someone else's package is reported, not raised raw
            entry.error = f"plugin {entry.name!r} ({entry.origin}) failed to import: {type(exc).__name__}: {exc}"
            return
        if not isinstance(loaded, Plugin):
            entry.error = f"plugin {entry.name!r} ({entry.origin}) is a {type(loaded).__name__}, not an ingest_pipelines.plugins.Plugin"
            return
        model = loaded.config
        if not (isinstance(model, type) and issubclass(model, StoreConfig)):
            entry.error = f"plugin {entry.name!r} ({entry.origin}): config must be a subclass of ingest_pipelines.plugins.PluginConfig"
            return
        declared = _declared_type(model)
        if declared != entry.name:
            entry.error = (
                f"plugin {entry.name!r} ({entry.origin}): its config model {model.__name__} declares type {declared!r}; "
                f"the entry point name and `type` must be the same"
            )
            return
        if not loaded.roles:
            entry.error = f"plugin {entry.name!r} ({entry.origin}) provides neither a source nor a destination"
            return
        entry.plugin = loaded

    def config_model(self, name: str, role: Role) -> type[StoreConfig]:
        """The config model of a type usable in `role`; UnknownType names the types that are."""
        plugin = self.plugin(name)
        if role not in plugin.roles:
            what = {"state": "state store"}.get(role, role)
            raise UnknownType(f"unknown type {name!r} for a {what} (it is a {' and '.join(plugin.roles)} type)")
        return plugin.config

    def for_role(self, role: Role) -> list[str]:
        """Names of the types that load and serve `role` (imports every plugin: for messages and listings)."""
        out = []
        for name in self.names():
            try:
                if role in self.plugin(name).roles:
                    out.append(name)
            except (UnknownType, PluginLoadError):
                continue
        return out

    def broken(self) -> dict[str, str]:
        """name -> why, for every type that cannot be loaded."""
        out = {}
        for name in self.names():
            try:
                self.plugin(name)
            except PluginLoadError as exc:
                out[name] = str(exc)
        return out

    def describe(self) -> Iterator[dict[str, Any]]:
        """One entry per installed type: roles, origin, keys (for `ingest-pipelines plugins`)."""
        for name in self.names():
            entry = self._all().get(name)
            origin = "registered in-process" if name in self._local else (entry.origin if entry else "")
            try:
                plugin = self.plugin(name)
            except PluginLoadError as exc:
                yield {"type": name, "origin": origin, "error": str(exc)}
                continue
            yield {
                "type": name,
                "origin": origin,
                "roles": list(plugin.roles),
                "summary": plugin.summary or getattr(plugin.config, "summary", "") or "",
                "keys": config_keys(plugin.config),
            }


def _declared_type(model: type[StoreConfig]) -> Any:
    """The `type` a config model declares: its default, else the one value of its Literal annotation."""
    import typing

    info = model.model_fields["type"]
    if not info.is_required():
        return info.default
    args = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is typing.Literal else ()
    return args[0] if len(args) == 1 else None


def config_keys(model: type[StoreConfig]) -> list[dict[str, Any]]:
    """The keys of a config model as ingest.yaml spells them: name, type, required or default, secret."""
    from pydantic import BeforeValidator

    from ingest_pipelines.config import parse_duration

    secrets = set(secret_field_names(model))
    out = []
    for name, info in model.model_fields.items():
        if name in ("type", "name"):
            continue
        if name in secrets:
            annotation = "secret ($VAR)"
        elif any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in info.metadata):
            annotation = "duration"
        else:
            annotation = _type_name(info.annotation)
        item: dict[str, Any] = {"key": info.alias or name, "type": annotation, "required": info.is_required()}
        if not info.is_required():
            default = info.get_default(call_default_factory=True)
            item["default"] = default if isinstance(default, str | int | float | bool | type(None) | list | dict) else repr(default)
        if info.description:
            item["description"] = info.description
        out.append(item)
    return out


def _type_name(annotation: Any) -> str:
    """`str`, `int`, `a | b` for a Literal, without `| None` (the default says null)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(str(arg) for arg in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if isinstance(annotation, type) and origin is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


#: the process-wide registry the config loader and open_store use.
REGISTRY = Registry()
