"""One Pennsieve import, resumable: manifest first, then POST /import, upload credentials, and the uploads.

The manifest (import id, upload key per file_path) is kept in a state store, so a re-run reuses the import.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from ingest_pipelines.pennsieve.client import PennsieveClient, PennsieveError
from ingest_pipelines.pennsieve.inputs import ImportInputs, InputFile
from ingest_pipelines.pennsieve.upload import ImportBucket, PlannedUpload, UploadSettings
from ingest_pipelines.state import StateStore

log = logging.getLogger(__name__)

#: manifest states: keys chosen (POST not answered yet), import created (uploads under way), every file uploaded.
PENDING, CREATED, COMPLETE = "pending", "created", "complete"


class ImportChangedError(PennsieveError):
    """The input changed while its import was unfinished: the import's file list can no longer be honoured."""


@dataclass(frozen=True)
class ImportRequest:
    """What to import into: the seed's DATASET_ID, PACKAGE_ID, IMPORT_TYPE and ASSET_TYPE."""

    dataset_id: str
    package_id: str
    import_type: str
    asset_type: str


@dataclass
class ImportResult:
    """What a run did; `import_id` is None when there was nothing to import."""

    import_id: str | None
    package_id: str | None = None
    files: int = 0
    bytes: int = 0
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    skipped_files: int = 0
    resumed: bool = False
    duration_seconds: float = 0.0
    credential_refreshes: int = 0
    #: file_path -> upload_key (the import's manifest).
    upload_keys: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and Dagster metadata (no secrets, no per-file lists)."""
        return {
            "import_id": self.import_id,
            "package_id": self.package_id,
            "files": self.files,
            "bytes": self.bytes,
            "uploaded_files": self.uploaded_files,
            "uploaded_bytes": self.uploaded_bytes,
            "skipped_files": self.skipped_files,
            "resumed": self.resumed,
            "duration_seconds": round(self.duration_seconds, 3),
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def changes_since(manifest: dict[str, Any], files: list[InputFile]) -> list[str]:
    """How the current files differ from the manifest's, as short phrases (empty: the same)."""
    before = {entry["file_path"]: entry["size"] for entry in manifest["files"]}
    now = {item.file_path: item.size for item in files}
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    resized = sorted(path for path in set(now) & set(before) if now[path] != before[path])
    changes = []
    for label, paths in (("added", added), ("removed", removed), ("changed size", resized)):
        if paths:
            shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
            changes.append(f"{label}: {shown}")
    return changes


def _request_changes(manifest: dict[str, Any], request: ImportRequest) -> list[str]:
    changes = []
    for name, value in (
        ("dataset_id", request.dataset_id),
        ("requested_package_id", request.package_id),
        ("import_type", request.import_type),
        ("asset_type", request.asset_type),
    ):
        if manifest.get(name) != value:
            changes.append(f"{name} {manifest.get(name)!r} -> {value!r}")
    return changes


def load_manifest(state: StateStore | None, key: str | None) -> dict[str, Any] | None:
    if state is None or key is None:
        return None
    return state.get_json(key)


def run_import(
    client: PennsieveClient,
    inputs: ImportInputs,
    request: ImportRequest,
    state: StateStore | None = None,
    manifest_key: str | None = None,
    settings: UploadSettings | None = None,
) -> ImportResult:
    """Import every file of `inputs`; with a state store, a re-run resumes the import its manifest names."""
    started = time.monotonic()
    files = inputs.files()
    if not files:
        log.info("%s: no files to import", inputs.uri())
        return ImportResult(import_id=None, duration_seconds=time.monotonic() - started)
    properties = inputs.read_properties()
    total_bytes = sum(item.size for item in files)

    manifest = load_manifest(state, manifest_key)
    resumed = False
    if manifest is not None:
        changes = changes_since(manifest, files) + _request_changes(manifest, request)
        if not changes and manifest.get("import_id"):
            resumed = True
            log.info("import %s: resuming (%s)", manifest["import_id"], manifest["status"])
            if manifest.get("properties_digest") != _digest(properties):
                log.warning(
                    "import %s: the properties file changed since the import was created; the import keeps the old ones",
                    manifest["import_id"],
                )
        elif changes and manifest.get("status") == CREATED:
            raise ImportChangedError(
                f"import {manifest['import_id']} of {inputs.uri()} is unfinished but its input changed ({'; '.join(changes)}); "
                f"restore the input, or delete the manifest {manifest_key} to start a new import"
            )
        elif changes:
            if manifest.get("status") == COMPLETE:
                log.info(
                    "import %s of %s is complete and the input changed (%s): starting a new import",
                    manifest["import_id"],
                    inputs.uri(),
                    "; ".join(changes),
                )
            manifest = None
        # else: PENDING with the same input: the POST was never answered; reuse its upload keys

    if not resumed:
        package_id = client.resolve_package(request.package_id)
        keys = {entry["file_path"]: entry["upload_key"] for entry in (manifest or {}).get("files", [])}
        manifest = {
            "dataset_id": request.dataset_id,
            "requested_package_id": request.package_id,
            "package_id": package_id,
            "import_type": request.import_type,
            "asset_type": request.asset_type,
            "integration_id": client.execution_run_id,
            "source": inputs.uri(),
            "files": [
                {"file_path": item.file_path, "size": item.size, "upload_key": keys.get(item.file_path) or str(uuid.uuid4())}
                for item in files
            ],
            "properties_digest": _digest(properties),
            "import_id": None,
            "status": PENDING,
            "created": _now(),
        }
        _save(state, manifest_key, manifest)
        manifest["import_id"] = client.create_import(
            request.dataset_id,
            package_id,
            request.import_type,
            [{"upload_key": entry["upload_key"], "file_path": entry["file_path"]} for entry in manifest["files"]],
            {"asset_type": request.asset_type, "properties": properties},
        )
        manifest["status"] = CREATED
        _save(state, manifest_key, manifest)
        log.info("import %s created for %d files (%d bytes) from %s", manifest["import_id"], len(files), total_bytes, inputs.uri())

    assert manifest is not None
    import_id: str = manifest["import_id"]
    upload_keys = {entry["file_path"]: entry["upload_key"] for entry in manifest["files"]}
    bucket = ImportBucket(
        import_id,
        client.upload_credentials(import_id, request.dataset_id),
        refresh=lambda: client.upload_credentials(import_id, request.dataset_id),
        settings=settings,
    )
    planned = [PlannedUpload(item, upload_keys[item.file_path]) for item in files]
    todo = bucket.missing(planned) if resumed else planned
    report = bucket.upload(todo, inputs)
    result = ImportResult(
        import_id=import_id,
        package_id=manifest["package_id"],
        files=len(files),
        bytes=total_bytes,
        uploaded_files=report.uploaded_files,
        uploaded_bytes=report.uploaded_bytes,
        skipped_files=len(planned) - len(todo),
        resumed=resumed,
        duration_seconds=time.monotonic() - started,
        credential_refreshes=bucket.refreshes,
        upload_keys=upload_keys,
    )
    if report.failures:
        manifest["last_error"] = f"{len(report.failures)} files failed"
        _save(state, manifest_key, manifest)
        shown = "; ".join(f"{path}: {reason}" for path, reason in report.failures[:5])
        raise PennsieveError(
            f"import {import_id}: {len(report.failures)} of {len(todo)} files failed to upload to {bucket.uri()} ({shown}); "
            "run again to upload the rest into the same import"
        )
    manifest.update(status=COMPLETE, completed=_now(), last_error=None)
    _save(state, manifest_key, manifest)
    log.info(
        "import %s: %d files uploaded (%d bytes), %d already present, in %.1fs",
        import_id,
        result.uploaded_files,
        result.uploaded_bytes,
        result.skipped_files,
        result.duration_seconds,
    )
    return result


def _save(state: StateStore | None, key: str | None, manifest: dict[str, Any]) -> None:
    if state is not None and key is not None:
        state.put_json(key, manifest)
