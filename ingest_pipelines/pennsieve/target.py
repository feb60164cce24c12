"""The seed's ECS/Lambda target: its environment-variable contract, read and run as one resumable import.

Required variables are checked before anything else; the callback token never appears in a repr or a log.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ingest_pipelines.config import FilesystemStoreConfig
from ingest_pipelines.pennsieve.client import PennsieveClient, PennsieveError, RetryPolicy
from ingest_pipelines.pennsieve.config import DEFAULT_API_HOST, DEFAULT_ASSET_TYPE, DEFAULT_IMPORT_TYPE
from ingest_pipelines.pennsieve.imports import ImportRequest, ImportResult, run_import
from ingest_pipelines.pennsieve.inputs import ImportInputs
from ingest_pipelines.pennsieve.upload import UploadSettings
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage.filesystem import FilesystemStore

log = logging.getLogger(__name__)

#: in the seed's order; each missing one is reported as "X is required".
REQUIRED_VARIABLES = ("INPUT_DIR", "CALLBACK_TOKEN", "EXECUTION_RUN_ID", "DATASET_ID", "PACKAGE_ID")
#: where import manifests live (put it on EFS to resume across task restarts); not part of the seed's contract.
STATE_DIR_VARIABLE = "PENNSIEVE_STATE_DIR"
UPLOAD_THREADS_VARIABLE = "PENNSIEVE_UPLOAD_THREADS"


class TargetConfigError(PennsieveError):
    """A required environment variable is missing or a value is invalid."""


@dataclass(frozen=True)
class TargetSettings:
    """The seed's environment variables, checked and with their defaults."""

    input_dir: str
    callback_token: str = field(repr=False)
    execution_run_id: str
    dataset_id: str
    package_id: str
    api_host: str = DEFAULT_API_HOST
    organization_id: str | None = None
    import_type: str = DEFAULT_IMPORT_TYPE
    asset_type: str = DEFAULT_ASSET_TYPE
    properties_file: str | None = None
    state_dir: str = field(default_factory=lambda: str(Path(tempfile.gettempdir()) / "ingest-pipelines-pennsieve"))
    upload_threads: int = 8

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TargetSettings:
        env = os.environ if env is None else env
        missing = [name for name in REQUIRED_VARIABLES if not env.get(name)]
        if missing:
            raise TargetConfigError("; ".join(f"{name} is required" for name in missing))
        threads_text = env.get(UPLOAD_THREADS_VARIABLE) or "8"
        try:
            threads = int(threads_text)
            if not 1 <= threads <= 64:
                raise ValueError
        except ValueError:
            raise TargetConfigError(f"{UPLOAD_THREADS_VARIABLE} must be a number from 1 to 64, got {threads_text!r}") from None
        defaults = cls.__dataclass_fields__
        return cls(
            input_dir=env["INPUT_DIR"],
            callback_token=env["CALLBACK_TOKEN"],
            execution_run_id=env["EXECUTION_RUN_ID"],
            dataset_id=env["DATASET_ID"],
            package_id=env["PACKAGE_ID"],
            api_host=(env.get("PENNSIEVE_API_HOST2") or DEFAULT_API_HOST).rstrip("/"),
            organization_id=env.get("ORGANIZATION_ID") or None,
            import_type=env.get("IMPORT_TYPE") or DEFAULT_IMPORT_TYPE,
            asset_type=env.get("ASSET_TYPE") or DEFAULT_ASSET_TYPE,
            properties_file=env.get("ASSET_PROPERTIES_FILE") or None,
            state_dir=env.get(STATE_DIR_VARIABLE) or defaults["state_dir"].default_factory(),  # type: ignore[misc]
            upload_threads=threads,
        )

    def manifest_key(self) -> str:
        """One manifest per (dataset, execution run, input folder, package): a re-run of the same task finds it."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.dataset_id}/{self.execution_run_id}")
        folder = re.sub(r"[^A-Za-z0-9._-]", "_", str(Path(self.input_dir).resolve()).strip("/"))[-80:]
        return f"imports/{safe}/{folder}-{re.sub(r'[^A-Za-z0-9._-]', '_', self.package_id)}.json"


def run_target(env: Mapping[str, str] | None = None, retry: RetryPolicy | None = None) -> ImportResult:
    """Read the environment and import INPUT_DIR; raises PennsieveError (or a subclass) on any failure."""
    settings = TargetSettings.from_env(env)
    log.info(
        "pennsieve target: run %s, dataset %s, package %s, organization %s, input %s",
        settings.execution_run_id,
        settings.dataset_id,
        settings.package_id,
        settings.organization_id or "-",
        settings.input_dir,
    )
    inputs = ImportInputs.local(settings.input_dir, settings.properties_file)
    state = StateStore(FilesystemStore(FilesystemStoreConfig(name="pennsieve-state", path=settings.state_dir)))
    request = ImportRequest(settings.dataset_id, settings.package_id, settings.import_type, settings.asset_type)
    with PennsieveClient(settings.api_host, settings.execution_run_id, settings.callback_token, retry=retry) as client:
        return run_import(client, inputs, request, state, settings.manifest_key(), UploadSettings(threads=settings.upload_threads))
