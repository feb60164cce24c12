"""The bundle format: a tar (plain or gzip) holding `metadata.txt` (a JSON list of entries) and `data/...` files.

Parses and checks metadata.txt, names the tasks of an ingest, and decides whether a tar member path is safe.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

METADATA_MEMBER = "metadata.txt"
DATA_DIR = "data/"
METADATA_JSON = "metadata.json"

#: Pacifica's task names, in the order a bundle goes through them.
TASK_UPLOADING = "UPLOADING"
TASK_OPEN_TAR = "open tar"
TASK_LOAD_METADATA = "load metadata"
TASK_POLICY = "Policy Validation"
TASK_INGEST_FILES = "ingest files"
TASK_MOVE_FILES = "move files"
TASK_INGEST_METADATA = "ingest metadata"
TASKS = (TASK_OPEN_TAR, TASK_LOAD_METADATA, TASK_POLICY, TASK_INGEST_FILES, TASK_INGEST_METADATA)


class BundleError(Exception):
    """A bundle was rejected at `task`; the message names the item and the reason."""

    def __init__(self, task: str, message: str):
        super().__init__(message)
        self.task = task
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class FileEntry:
    """One `destinationTable: "Files"` entry of metadata.txt."""

    name: str
    subdir: str
    size: int
    hashsum: str
    hashtype: str
    #: POST /move only: where the file is now (a key or URI in the drop location).
    source: str | None = None

    @property
    def path(self) -> str:
        """The file's path inside the bundle's data/ folder and inside the job's archive folder."""
        return posixpath.join(self.subdir, self.name) if self.subdir else self.name

    @property
    def member(self) -> str:
        return DATA_DIR + self.path

    def new_hash(self) -> Any:
        return hashlib.new(self.hashtype)


def safe_relative_path(path: str) -> str | None:
    """The normalized relative path, or None when it is absolute, climbs out with `..`, or is empty."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return None
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _entry_error(index: int, entry: Any, reason: str) -> str:
    label = entry.get("name") if isinstance(entry, dict) else None
    return f"metadata.txt entry {index}" + (f" ({label})" if label else "") + f": {reason}"


def parse_file_entry(index: int, entry: dict[str, Any], task: str = TASK_LOAD_METADATA) -> FileEntry:
    for key in ("name", "size", "hashsum", "hashtype"):
        if key not in entry:
            raise BundleError(task, _entry_error(index, entry, f"missing {key!r}"))
    name, subdir = entry["name"], entry.get("subdir") or ""
    if not isinstance(name, str) or not isinstance(subdir, str):
        raise BundleError(task, _entry_error(index, entry, "name and subdir must be strings"))
    relative = safe_relative_path(posixpath.join(subdir, name) if subdir else name)
    if relative is None or name.endswith("/"):
        raise BundleError(task, _entry_error(index, entry, f"unsafe path {posixpath.join(subdir, name)!r}"))
    if relative == METADATA_JSON:
        # the job folder's commit marker: a data file of that name would be overwritten by it
        raise BundleError(task, _entry_error(index, entry, f"{METADATA_JSON!r} at the top of data/ is reserved for the job's metadata"))
    size = entry["size"]
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(task, _entry_error(index, entry, f"size must be a non-negative integer, got {entry['size']!r}"))
    hashtype = str(entry["hashtype"]).lower()
    if hashtype not in hashlib.algorithms_available:
        raise BundleError(task, _entry_error(index, entry, f"unknown hashtype {entry['hashtype']!r}"))
    if hashlib.new(hashtype).digest_size == 0:
        # shake_128/shake_256 have no fixed digest: a hashsum of any length could not be checked
        raise BundleError(task, _entry_error(index, entry, f"unsupported hashtype {entry['hashtype']!r} (variable-length digest)"))
    hashsum = str(entry["hashsum"]).strip().lower()
    # uploaders write "sha1:abcd..."; the prefix repeats the hashtype
    if hashsum.startswith(hashtype + ":"):
        hashsum = hashsum[len(hashtype) + 1 :]
    source = entry.get("source")
    if source is not None and not isinstance(source, str):
        raise BundleError(task, _entry_error(index, entry, "source must be a string"))
    dirname, _, basename = relative.rpartition("/")
    return FileEntry(name=basename, subdir=dirname, size=size, hashsum=hashsum, hashtype=hashtype, source=source)


@dataclass(frozen=True)
class BundleMetadata:
    """metadata.txt parsed: every entry as uploaded, and the file entries by their data/ path."""

    entries: list[Any]
    files: dict[str, FileEntry]

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def parse_metadata(raw: bytes | str | list[Any], task: str = TASK_LOAD_METADATA) -> BundleMetadata:
    """Parse metadata.txt (JSON text or an already-decoded list); errors are BundleError at `task`."""
    if isinstance(raw, list):
        entries = raw
    else:
        try:
            entries = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BundleError(task, f"metadata.txt is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise BundleError(task, f"metadata.txt must be a JSON list of entries, got {type(entries).__name__}")
    files: dict[str, FileEntry] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BundleError(task, f"metadata.txt entry {index}: expected an object, got {type(entry).__name__}")
        if entry.get("destinationTable") != "Files":
            continue
        parsed = parse_file_entry(index, entry, task)
        if parsed.path in files:
            raise BundleError(task, _entry_error(index, entry, f"file {parsed.path!r} is listed twice"))
        files[parsed.path] = parsed
    return BundleMetadata(entries=entries, files=files)


def metadata_document(metadata: BundleMetadata) -> bytes:
    """metadata.json as written to the archive: the entries exactly as uploaded."""
    return json.dumps(metadata.entries, indent=2, sort_keys=True).encode()
