"""Streamed bundle validation: the tar is read once from the drop location, each data/ member hashed while
it is written to its final key in the archive; metadata.json is written only after the whole bundle checked out.

Pacifica's tasks, in order: "open tar", "load metadata", "Policy Validation", "ingest files", "ingest metadata".
metadata.txt may come anywhere in the tar: members before it are written while hashed with the speculative
algorithms (sha1, Pacifica's default) and verified once it is read; a member whose listed hashtype was not
computed is re-read from the archive. Nothing is extracted to local disk.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import requests

from ingest_pipelines.bundles.archive import ArchiveLayout, ArchiveWriter
from ingest_pipelines.bundles.config import ServiceConfig
from ingest_pipelines.bundles.format import (
    DATA_DIR,
    METADATA_MEMBER,
    TASK_INGEST_FILES,
    TASK_INGEST_METADATA,
    TASK_LOAD_METADATA,
    TASK_MOVE_FILES,
    TASK_OPEN_TAR,
    TASK_POLICY,
    BundleError,
    BundleMetadata,
    FileEntry,
    metadata_document,
    parse_metadata,
    safe_relative_path,
)
from ingest_pipelines.bundles.jobs import JobProgress, StaleAttempt
from ingest_pipelines.storage import ObjectStore

#: hashes computed for members that arrive before metadata.txt names their hashtype
SPECULATIVE_HASHES = ("sha1",)
#: metadata.txt is read into memory: it must stay small
MAX_METADATA_BYTES = 64 * 1024 * 1024
READ_BLOCK = 1024 * 1024
#: members up to this size are read whole and written by the archive writer's workers (bounded: 4 in flight)
SMALL_MEMBER = 8 * 1024 * 1024


@dataclass(frozen=True)
class BundleLimits:
    max_members: int = 100_000
    max_total_size: int = 2**40


@dataclass
class IngestResult:
    job_id: int
    files: int = 0
    bytes: int = 0
    #: archive keys (relative to the destination prefix) of the files and metadata.json
    keys: list[str] = field(default_factory=list)
    task: str = TASK_INGEST_METADATA
    source_bytes: int = 0
    seconds: float = 0.0


class SourceReadError(RuntimeError):
    """Reading the drop object failed (network, S3): not the bundle's fault, so the job is retried.

    Raised instead of the reader's own error, which tarfile could take for a truncated tar (botocore's
    read timeouts are OSErrors)."""


class CountingReader:
    """Reads the drop object in large blocks (tarfile asks for 10 KiB at a time: one S3 body read each
    would cost more than the bytes), counting the bytes read (progress of the job)."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None] | None = None, block: int = READ_BLOCK):
        self.raw = raw
        self.count = 0
        self.on_read = on_read
        self.block = block
        self._buffer = b""
        self._at = 0
        self._eof = False

    def _fill(self, size: int) -> None:
        parts = [self._buffer[self._at :]]
        have = len(parts[0])
        while not self._eof and (size < 0 or have < size):
            try:
                chunk = self.raw.read(self.block if size < 0 else max(self.block, size - have))
            except Exception as exc:
                raise SourceReadError(f"reading the drop object failed after {self.count} bytes: {type(exc).__name__}: {exc}") from exc
            if not chunk:
                self._eof = True
                break
            parts.append(chunk)
            have += len(chunk)
            self.count += len(chunk)
        self._buffer = parts[0] if len(parts) == 1 else b"".join(parts)
        self._at = 0
        if self.on_read is not None:
            self.on_read(self.count)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or len(self._buffer) - self._at < size:
            self._fill(-1 if size is None or size < 0 else size)
        if size is None or size < 0:
            data, self._buffer, self._at = self._buffer[self._at :], b"", 0
            return data
        data = self._buffer[self._at : self._at + size]
        self._at += len(data)
        return data

    def close(self) -> None:
        close = getattr(self.raw, "close", None)
        if close is not None:
            close()


class HashingReader:
    """Hashes and counts what passes through on its way to the archive; not seekable (boto3 streams it)."""

    def __init__(self, raw: BinaryIO, algorithms: tuple[str, ...] | list[str]):
        self.raw = raw
        self.hashes = {name: hashlib.new(name) for name in dict.fromkeys(algorithms)}
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(READ_BLOCK if size is None or size < 0 else size)
        if size is None or size < 0:
            chunks = [data]
            while data:
                data = self.raw.read(READ_BLOCK)
                chunks.append(data)
            data = b"".join(chunks)
        for digest in self.hashes.values():
            digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def hexdigests(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self.hashes.items()}


def _service_answer(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return answer if isinstance(answer, dict) else {"status": None, "answer": response.text[:200]}


def check_policy(policy: ServiceConfig, metadata: BundleMetadata) -> None:
    """POST the metadata to the policy service; anything but an answer with status "success" rejects."""
    try:
        response = requests.post(policy.url, json=metadata.entries, timeout=policy.timeout)
    except requests.RequestException as exc:
        raise BundleError(TASK_POLICY, f"policy service {policy.url} is unreachable: {exc}") from None
    answer = _service_answer(response)
    if response.status_code >= 300 or answer.get("status") != "success":
        reason = answer.get("message") or answer.get("answer") or answer.get("status")
        raise BundleError(TASK_POLICY, f"policy service {policy.url} rejected the bundle (HTTP {response.status_code}): {reason}")


def put_metadata(service: ServiceConfig, metadata: BundleMetadata, job_id: int) -> None:
    """PUT the metadata to the metadata service; it must answer status "success"."""
    try:
        response = requests.put(service.url, json=metadata.entries, params={"job_id": job_id}, timeout=service.timeout)
    except requests.RequestException as exc:
        raise BundleError(TASK_INGEST_METADATA, f"metadata service {service.url} is unreachable: {exc}") from None
    answer = _service_answer(response)
    if response.status_code >= 300 or answer.get("status") != "success":
        reason = answer.get("message") or answer.get("answer") or answer.get("status")
        raise BundleError(
            TASK_INGEST_METADATA, f"metadata service {service.url} refused the metadata (HTTP {response.status_code}): {reason}"
        )


@dataclass
class _Written:
    entry: FileEntry | None
    size: int
    digests: dict[str, str]


class BundleValidator:
    """Validates one bundle (or move document) for one job and ingests it into the destination store."""

    def __init__(
        self,
        destination: ObjectStore,
        job_id: int,
        *,
        staging_prefix: str = ".staging/",
        limits: BundleLimits | None = None,
        policy: ServiceConfig | None = None,
        metadata_service: ServiceConfig | None = None,
        progress: JobProgress | None = None,
    ):
        self.destination = destination
        self.job_id = job_id
        self.layout = ArchiveLayout(job_id, staging_prefix)
        self.limits = limits or BundleLimits()
        self.policy = policy
        self.metadata_service = metadata_service
        self.progress = progress or JobProgress(None, job_id)
        self.writer = ArchiveWriter(destination, self.layout)
        #: checked before metadata.json is written: a stale attempt (a newer one was started) must not commit
        self.may_commit: Callable[[], None] | None = None
        self.metadata: BundleMetadata | None = None
        self._written: dict[str, _Written] = {}

    @property
    def task(self) -> str:
        return self.progress.task

    # ------------------------------------------------------------------ tar bundles

    def ingest_tar(self, stream: BinaryIO, source_size: int | None = None) -> IngestResult:
        """Read the tar from `stream` once; on any failure nothing of this job remains in the archive."""
        started = time.monotonic()
        reader = CountingReader(stream, lambda done: self.progress.advance(done, source_size or 0) if source_size else None)
        try:
            self._ingest_tar(reader)
            result = self._finish()
        except StaleAttempt:
            raise  # a newer attempt owns the job folder now: leave it alone
        except BaseException:
            self.writer.discard()
            raise
        finally:
            self.writer.close()
        result.source_bytes = reader.count
        result.seconds = time.monotonic() - started
        return result

    def _ingest_tar(self, reader: CountingReader) -> None:
        self.progress.start(TASK_OPEN_TAR)
        try:
            # "r|*": a stream (no seeks), plain or compressed as the magic bytes say
            tar = tarfile.open(fileobj=reader, mode="r|*")  # type: ignore[call-overload]
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleError(TASK_OPEN_TAR, f"Failed to open tarfile. ({exc})") from None
        self.progress.start(TASK_INGEST_FILES)
        members = 0
        with tar:
            while True:
                try:
                    member = tar.next()
                except (tarfile.TarError, EOFError, OSError) as exc:
                    raise BundleError(self.task, f"bundle is truncated or corrupt after {members} members: {exc}") from None
                if member is None:
                    break
                # stream mode keeps every TarInfo; drop them so memory does not grow with the member count
                tar.members.clear()
                members += 1
                if members > self.limits.max_members:
                    raise BundleError(TASK_INGEST_FILES, f"bundle has more than maxMembers={self.limits.max_members} members")
                self._member(tar, member)
        if self.metadata is None:
            raise BundleError(TASK_LOAD_METADATA, f"{METADATA_MEMBER} is missing from the bundle")
        self.progress.start(TASK_INGEST_FILES)
        missing = sorted(set(self.metadata.files) - set(self._written))
        if missing:
            shown = ", ".join(DATA_DIR + path for path in missing[:5])
            raise BundleError(TASK_INGEST_FILES, f"{len(missing)} file(s) listed in {METADATA_MEMBER} are missing from the bundle: {shown}")
        self.writer.wait()
        self.progress.finish()

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = member.name
        path = safe_relative_path(name)
        if name.startswith("/") or path is None:
            reason = "absolute path" if name.startswith("/") else "path leaves the bundle ('..')"
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} rejected: {reason}")
        if member.issym() or member.islnk():
            kind = "symbolic link" if member.issym() else "hard link"
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} rejected: {kind} to {member.linkname!r}")
        if member.ischr() or member.isblk() or member.isfifo():
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} rejected: device or FIFO")
        if member.isdir():
            return
        if not member.isreg():
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} rejected: unsupported tar member type {member.type!r}")
        if path == METADATA_MEMBER:
            self._read_metadata(tar, member)
            return
        if not path.startswith(DATA_DIR):
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} rejected: a bundle holds {METADATA_MEMBER} and {DATA_DIR} only")
        relative = path[len(DATA_DIR) :]
        if relative in self._written:
            raise BundleError(TASK_INGEST_FILES, f"member {name!r} appears twice in the bundle")
        entry = None
        if self.metadata is not None:
            entry = self.metadata.files.get(relative)
            if entry is None:
                raise BundleError(TASK_INGEST_FILES, f"{DATA_DIR}{relative}: not listed in {METADATA_MEMBER}")
            if member.size != entry.size:
                raise BundleError(
                    TASK_INGEST_FILES,
                    f"{DATA_DIR}{relative}: size mismatch ({METADATA_MEMBER} says {entry.size}, bundle has {member.size})",
                )
        total = sum(written.size for written in self._written.values()) + member.size
        if total > self.limits.max_total_size:
            raise BundleError(TASK_INGEST_FILES, f"bundle data exceeds maxTotalSize={self.limits.max_total_size} bytes")
        handle = tar.extractfile(member)
        assert handle is not None  # a regular file always has a body
        self._write(relative, handle, member.size, entry)

    def _write(self, relative: str, stream: BinaryIO, size: int, entry: FileEntry | None) -> None:
        algorithms = (entry.hashtype,) if entry is not None else SPECULATIVE_HASHES
        hashing = HashingReader(stream, algorithms)
        try:
            if size <= SMALL_MEMBER:
                # read (and hash) now, write in the background while the stream moves on
                self.writer.submit(relative, hashing.read(size + 1))
            else:
                self.writer.upload(relative, hashing)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            raise BundleError(self.task, f"{DATA_DIR}{relative}: bundle is truncated or corrupt: {exc}") from None
        if hashing.size != size:
            raise BundleError(self.task, f"{DATA_DIR}{relative}: read {hashing.size} bytes, expected {size}")
        written = _Written(entry=entry, size=hashing.size, digests=hashing.hexdigests())
        self._written[relative] = written
        if entry is not None:
            self._verify(relative, written, entry)

    def _verify(self, relative: str, written: _Written, entry: FileEntry) -> None:
        if written.size != entry.size:
            raise BundleError(self.task, f"{DATA_DIR}{relative}: size mismatch ({METADATA_MEMBER} says {entry.size}, got {written.size})")
        got = written.digests.get(entry.hashtype)
        if got is None:
            # metadata came after this member and names a hash we did not compute: re-read what was written
            self.writer.wait()
            with self.destination.open(self.writer.key(relative)) as handle:
                hashing = HashingReader(handle, (entry.hashtype,))
                while hashing.read(READ_BLOCK):
                    pass
            got = hashing.hexdigests()[entry.hashtype]
            written.digests[entry.hashtype] = got
        if got != entry.hashsum:
            raise BundleError(self.task, f"{DATA_DIR}{relative}: {entry.hashtype} mismatch (expected {entry.hashsum}, got {got})")
        written.entry = entry

    def _read_metadata(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        if self.metadata is not None:
            raise BundleError(TASK_LOAD_METADATA, f"{METADATA_MEMBER} appears twice in the bundle")
        resume = self.task
        self.progress.start(TASK_LOAD_METADATA)
        if member.size > MAX_METADATA_BYTES:
            raise BundleError(TASK_LOAD_METADATA, f"{METADATA_MEMBER} is {member.size} bytes, more than {MAX_METADATA_BYTES}")
        handle = tar.extractfile(member)
        assert handle is not None
        try:
            raw = handle.read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise BundleError(TASK_LOAD_METADATA, f"{METADATA_MEMBER}: bundle is truncated or corrupt: {exc}") from None
        self._accept_metadata(parse_metadata(raw))
        self.progress.start(resume)
        # members written before metadata.txt are checked now
        for relative, written in self._written.items():
            entry = self.metadata.files.get(relative) if self.metadata else None
            if entry is None:
                raise BundleError(TASK_INGEST_FILES, f"{DATA_DIR}{relative}: not listed in {METADATA_MEMBER}")
            self._verify(relative, written, entry)

    def _accept_metadata(self, metadata: BundleMetadata) -> None:
        self.progress.finish(TASK_LOAD_METADATA)
        if metadata.total_size > self.limits.max_total_size:
            raise BundleError(
                TASK_LOAD_METADATA,
                f"{METADATA_MEMBER} lists {metadata.total_size} bytes, more than maxTotalSize={self.limits.max_total_size}",
            )
        if self.policy is not None:
            self.progress.start(TASK_POLICY)
            check_policy(self.policy, metadata)
            self.progress.finish(TASK_POLICY)
        self.metadata = metadata

    # ------------------------------------------------------------------ move documents

    def ingest_move(self, document: bytes, open_source: Callable[[str], BinaryIO]) -> IngestResult:
        """POST /move: the metadata names each file's `source` in the drop location; copy, verify, ingest."""
        started = time.monotonic()
        try:
            self.progress.start(TASK_LOAD_METADATA)
            metadata = parse_metadata(document)
            for entry in metadata.files.values():
                if not entry.source:
                    raise BundleError(TASK_LOAD_METADATA, f"{entry.path}: a move entry needs 'source'")
            self._accept_metadata(metadata)
            self.progress.start(TASK_MOVE_FILES)
            done, total = 0, metadata.total_size
            for relative, entry in metadata.files.items():
                with open_source(entry.source or "") as handle:
                    self._write(relative, handle, entry.size, entry)
                done += entry.size
                self.progress.advance(done, total)
            self.writer.wait()
            self.progress.finish()
            result = self._finish()
        except StaleAttempt:
            raise  # a newer attempt owns the job folder now: leave it alone
        except BaseException:
            self.writer.discard()
            raise
        finally:
            self.writer.close()
        result.seconds = time.monotonic() - started
        return result

    # ------------------------------------------------------------------ both

    def _finish(self) -> IngestResult:
        """ "ingest metadata": the metadata service (if any), then metadata.json, the commit marker, last."""
        assert self.metadata is not None
        metadata = self.metadata
        self.progress.start(TASK_INGEST_METADATA)
        self.writer.wait()  # every file is in place (and verified) before anything says so
        if self.metadata_service is not None:
            put_metadata(self.metadata_service, metadata, self.job_id)
        if self.may_commit is not None:
            self.may_commit()
        keys = self.writer.commit(metadata_document(metadata))
        self.progress.finish(TASK_INGEST_METADATA)
        return IngestResult(
            job_id=self.job_id,
            files=len(metadata.files),
            bytes=metadata.total_size,
            keys=keys,
            task=TASK_INGEST_METADATA,
        )
