"""Dagster resources: one per source/destination of ingest.yaml, plus the state store.

Secrets reach Dagster only as EnvVar (names shown in the UI, never values); literal secrets
stay in ingest.yaml and are read in-process by `get_store`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import dagster as dg

from ingest_pipelines.config import IngestConfig, S3StoreConfig, Secret, StoreConfig, dagster_name, load_config
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage import ObjectStore, open_store

STATE_RESOURCE_KEY = "ingest_state"


def store_resource_key(role: Literal["source", "destination"], name: str) -> str:
    """`source_<name>` / `destination_<name>` with the name made Dagster-safe."""
    return f"{role}_{dagster_name(name)}"


@functools.lru_cache(maxsize=16)
def _cached_config(path: str, mtime_ns: int) -> IngestConfig:
    return load_config(path)


def config_at(path: str | None) -> IngestConfig:
    """The config a resource came from, re-read only when the file changed."""
    if path is None:
        return load_config()
    return _cached_config(path, Path(path).stat().st_mtime_ns)


def _env_var(secret: Any) -> dg.EnvVar | None:
    return dg.EnvVar(secret.env_var) if isinstance(secret, Secret) and secret.env_var else None


class ObjectStoreResource(dg.ConfigurableResource):
    """A source, destination or the state store of ingest.yaml, as an ObjectStore."""

    config_path: str | None = None
    role: str
    name: str
    uri: str = ""
    endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None

    def store_config(self) -> StoreConfig:
        config = config_at(self.config_path)
        if self.role == "source":
            return config.source(self.name)
        if self.role == "destination":
            return config.destination(self.name)
        return config.state_store()

    def get_store(self, **kwargs: Any) -> ObjectStore:
        store_config = self.store_config()
        if isinstance(store_config, S3StoreConfig):
            kwargs.setdefault(
                "credentials",
                {
                    "aws_access_key_id": self.aws_access_key_id,
                    "aws_secret_access_key": self.aws_secret_access_key,
                    "aws_session_token": self.aws_session_token,
                },
            )
        return open_store(store_config, role=self.role, **kwargs)

    def get_state(self, **kwargs: Any) -> StateStore:
        return StateStore(self.get_store(**kwargs))


def store_resource(config: IngestConfig, role: str, store: StoreConfig) -> ObjectStoreResource:
    fields: dict[str, Any] = {"config_path": config.path, "role": role, "name": store.name}
    uri = getattr(store, "uri", None)
    fields["uri"] = uri() if callable(uri) else ""
    if isinstance(store, S3StoreConfig):
        fields["endpoint_url"] = store.endpoint_url()
        for field, secret in (
            ("aws_access_key_id", store.accessKeyID),
            ("aws_secret_access_key", store.secretAccessKey),
            ("aws_session_token", store.sessionToken),
        ):
            env = _env_var(secret)
            if env is not None:
                fields[field] = env
    return ObjectStoreResource(**fields)


def build_resources(config: IngestConfig) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    for source in config.sources:
        resources[store_resource_key("source", source.name)] = store_resource(config, "source", source)
    for dest in config.destinations:
        resources[store_resource_key("destination", dest.name)] = store_resource(config, "destination", dest)
    resources[STATE_RESOURCE_KEY] = store_resource(config, "state", config.state_store())
    return resources


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}
