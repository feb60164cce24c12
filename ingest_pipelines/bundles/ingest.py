"""One bundle job from start to end: read the drop object, validate and ingest it, keep the job state.

Used by the Dagster asset (and the benchmark); a retry of the same job first removes what an earlier attempt left.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from ingest_pipelines.bundles.archive import ArchiveLayout, archive_problems, clear_job
from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import TASK_INGEST_METADATA, TASK_MOVE_FILES, BundleError, safe_relative_path
from ingest_pipelines.bundles.jobs import STATE_FAILED, STATE_OK, JobProgress, JobState, JobStore, StaleAttempt
from ingest_pipelines.bundles.validator import BundleLimits, BundleValidator, IngestResult
from ingest_pipelines.config import FilesystemStoreConfig, S3StoreConfig
from ingest_pipelines.storage import ObjectStore, StoreError

log = logging.getLogger(__name__)

MOVE_SUFFIX = ".move.json"


class JobInputError(RuntimeError):
    """The job cannot start: no drop object recorded, or it is gone."""


@dataclass(frozen=True)
class JobOutcome:
    job: JobState
    result: IngestResult | None
    #: true when the job was already complete and nothing was done
    skipped: bool = False


def resolve_move_source(store: ObjectStore, source: str) -> str:
    """A move entry's `source` as a key of the drop store: a relative key, `s3://bucket/key` in the
    drop bucket and prefix, or a path / file:// URI inside the drop folder. Anything else is refused."""
    config = store.config
    prefix = config.prefix
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme == "s3":
        # the key is everything after the bucket, taken literally (as the AWS CLI does): '#', '?', '%' are key characters
        bucket, _, full = source[len("s3://") :].partition("/")
        if not isinstance(config, S3StoreConfig) or bucket != config.bucket:
            raise BundleError(TASK_MOVE_FILES, f"source {source!r} is outside the drop location {store.uri()}")
    elif scheme == "file" or source.startswith("/"):
        if not isinstance(config, FilesystemStoreConfig):
            raise BundleError(TASK_MOVE_FILES, f"source {source!r} is outside the drop location {store.uri()}")
        path = Path(unquote(urlsplit(source).path) if scheme == "file" else source).resolve()
        root = Path(config.path).resolve()
        if root not in path.parents:
            raise BundleError(TASK_MOVE_FILES, f"source {source!r} is outside the drop location {store.uri()}")
        full = path.relative_to(root).as_posix()
    elif scheme:
        raise BundleError(TASK_MOVE_FILES, f"source {source!r}: unsupported scheme {scheme!r}")
    else:
        # a key relative to the drop prefix; a ':' in it ("run:7/a.dat") is a key character, not a scheme
        full = prefix + source
    safe = safe_relative_path(full)
    if safe is None or not safe.startswith(prefix):
        raise BundleError(TASK_MOVE_FILES, f"source {source!r} is outside the drop location {store.uri()}")
    return safe[len(prefix) :]


def run_job(
    workflow: BundleWorkflow,
    jobs: JobStore,
    job_id: int,
    source: ObjectStore,
    destination: ObjectStore,
    run_id: str | None = None,
    run_created: datetime | None = None,
    attempt: int | None = None,
) -> JobOutcome:
    """Validate and ingest job `job_id`. A rejected bundle raises BundleError after the job is marked FAILED at the
    task that rejected it (so does a job whose drop object is gone: JobInputError). Any other error (S3, the
    network, a killed process) leaves the job OK and not complete, with the error in `exception`, for
    reconciliation to retry; what this attempt wrote is removed.

    `attempt` is the job attempt the calling run was requested for: when the job has moved on to a newer attempt
    (or was set FAILED) the run stops with StaleAttempt, without writing or removing anything of the job.
    `run_created` (UTC) is when the calling run was queued: a job set FAILED after that (an administrator failing
    a stuck job whose run was still waiting) is left FAILED and not ingested; one FAILED before it is retried."""
    job = jobs.get(job_id)
    layout = ArchiveLayout(job_id, workflow.stagingPrefix)
    if attempt is not None and job.attempt != attempt:
        raise StaleAttempt(f"job {job_id} is at attempt {job.attempt}, this run was requested for attempt {attempt}; not ingested")
    if job.complete and job.state == STATE_OK and destination.head(layout.commit_key) is not None:
        return JobOutcome(job=job, result=None, skipped=True)
    if job.state == STATE_OK and not job.complete and committed(destination, layout):
        # an earlier attempt wrote metadata.json (every file was in place) and stopped before the job said so
        log.info("job %s: the archive folder was already committed by an earlier attempt", job_id)
        done = jobs.update(job_id, attempt=attempt, task=TASK_INGEST_METADATA, task_percent=100.0, exception="", run_id=run_id)
        _clean_up(workflow, source, job)
        return JobOutcome(job=done, result=None, skipped=True)
    if run_created is not None and job.state == STATE_FAILED and job.updated > run_created.astimezone(UTC).replace(tzinfo=None):
        raise BundleError(job.task, f"job {job_id} was set FAILED after this run was queued ({job.exception}); not ingested")
    if not job.source_key:
        jobs.fail(job_id, job.task, f"job {job_id} has no drop object recorded")
        raise JobInputError(f"job {job_id} has no drop object recorded")
    if job.state == STATE_FAILED:
        # a run launched after the job was set FAILED (a re-execution from the UI) retries it
        jobs.update(job_id, state=STATE_OK, exception="", run_id=run_id)
    else:
        # the exception of a retried job says which attempt this is and why the last one failed; it is kept
        jobs.update(job_id, attempt=attempt, run_id=run_id)
    progress = JobProgress(jobs, job_id, attempt=attempt)
    validator = BundleValidator(
        destination,
        job_id,
        staging_prefix=workflow.stagingPrefix,
        limits=BundleLimits(workflow.maxMembers, workflow.maxTotalSize),
        policy=workflow.policy,
        metadata_service=workflow.metadataService,
        progress=progress,
    )
    validator.may_commit = lambda: _still_current(jobs, job_id, attempt)
    try:
        removed = clear_job(destination, layout)
        if removed:
            log.info("job %s: removed %d objects left by an earlier attempt", job_id, removed)
        if job.source_key.endswith(MOVE_SUFFIX):
            result = _run_move(validator, source, job.source_key)
        else:
            info = source.head(job.source_key)
            if info is None:
                raise JobInputError(f"job {job_id}: drop object {source.uri(job.source_key)} does not exist")
            stream = source.open(job.source_key)
            try:
                result = validator.ingest_tar(stream, info.size)
            finally:
                _close(stream)
    except StaleAttempt:
        _stale(jobs, job_id, attempt, destination, layout)
        raise
    except (BundleError, JobInputError) as exc:
        task, message = (exc.task, exc.message) if isinstance(exc, BundleError) else (validator.task or job.task, str(exc))
        try:
            jobs.fail(job_id, task, message, attempt=attempt)
        except StaleAttempt:
            _stale(jobs, job_id, attempt, destination, layout)
        raise
    except Exception as exc:
        try:
            jobs.update(job_id, attempt=attempt, exception=f"{type(exc).__name__}: {exc} (at {validator.task or 'open tar'!r}; retried)")
        except Exception:  # the store is what failed, or a newer attempt owns the job: the run's failure says it
            log.warning("job %s: could not record the error in the job state", job_id, exc_info=True)
        raise
    done = jobs.get(job_id)
    if done.exception:
        # the note of a retried attempt ("attempt 2 of 20 started ...") is history once the job is complete
        done = jobs.update(job_id, exception="")
    _clean_up(workflow, source, job)
    return JobOutcome(job=done, result=result)


def _still_current(jobs: JobStore, job_id: int, attempt: int | None) -> None:
    """Before metadata.json is written: the attempt is still the job's current one and nobody set it FAILED."""
    job = jobs.get(job_id)
    if job.state == STATE_FAILED or (attempt is not None and job.attempt != attempt):
        raise StaleAttempt(f"job {job_id} is at attempt {job.attempt} ({job.state}) (this run: attempt {attempt}); not committed")


def _stale(jobs: JobStore, job_id: int, attempt: int | None, destination: ObjectStore, layout: ArchiveLayout) -> None:
    """This run is no longer the job's: when no newer attempt owns the folder (the job was set FAILED while the run
    ingested), remove what the run wrote; else leave the folder to the newer attempt."""
    job = jobs.get(job_id)
    if job.state == STATE_FAILED and (attempt is None or job.attempt == attempt):
        clear_job(destination, layout)


def committed(destination: ObjectStore, layout: ArchiveLayout) -> bool:
    """The job folder holds metadata.json and exactly the files it lists (sizes match): an attempt finished it."""
    if destination.head(layout.commit_key) is None:
        return False
    return not any(archive_problems(destination, layout).values())


def _clean_up(workflow: BundleWorkflow, source: ObjectStore, job: JobState) -> None:
    if not workflow.cleanUp or not job.source_key:
        return
    try:
        source.delete(job.source_key)
    except StoreError as exc:  # the archive is complete; a leftover drop object is only a warning
        log.warning("job %s: cleanUp could not delete %s: %s", job.job_id, job.source_key, exc)


def _run_move(validator: BundleValidator, source: ObjectStore, document_key: str) -> IngestResult:
    document = source.get_bytes(document_key)
    moved: list[str] = []

    def open_source(name: str) -> BinaryIO:
        key = resolve_move_source(source, name)
        if source.head(key) is None:
            raise BundleError(TASK_MOVE_FILES, f"source {name!r} does not exist ({source.uri(key)})")
        moved.append(key)
        return source.open(key)

    result = validator.ingest_move(document, open_source)
    # a move removes the originals, only once the archive holds every file
    for key in moved:
        source.delete(key)
    return result


def _close(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def drop_name_matches(key: str, patterns: list[str]) -> bool:
    """Whether a drop object's name (the part after the last '/') matches one of the patterns."""
    name = posixpath.basename(key)
    return any(fnmatchcase(name, pattern) for pattern in patterns)
