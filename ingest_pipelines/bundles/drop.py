"""Finding new bundles in the drop location: a bounded, resumable listing that creates one job per
new object version (key + ETag), skipping objects that already have a job (e.g. front door uploads)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.ingest import MOVE_SUFFIX, drop_name_matches
from ingest_pipelines.bundles.jobs import JobState, JobStore
from ingest_pipelines.storage import ObjectStore


@dataclass(frozen=True)
class BundleRequest:
    """A job whose run should be requested; `run_key` makes a repeated request harmless."""

    job: JobState
    run_key: str


@dataclass
class DropScan:
    requests: list[BundleRequest] = field(default_factory=list)
    #: where the next tick resumes listing (None: from the start)
    after: str | None = None
    listed: int = 0
    #: true when this tick reached the end of the listing
    wrapped: bool = False


def run_key(key: str, etag: str) -> str:
    return f"{key}@{etag}"


def scan_drop(
    store: ObjectStore, jobs: JobStore, workflow: BundleWorkflow, after: str | None, max_pages: int, seconds: float, page_size: int = 1000
) -> DropScan:
    """List at most `max_pages` pages / `seconds` from `after`; wrap to the start at the end, so an object
    dropped with a key below the cursor is found on the next pass."""
    deadline = time.monotonic() + seconds
    scan = DropScan(after=after)
    for _ in range(max_pages):
        page, more = store.list_page("", start_after=scan.after, max_keys=page_size)
        scan.listed += len(page)
        for info in page:
            is_move = info.key.startswith(workflow.uploadPrefix) and info.key.endswith(MOVE_SUFFIX)
            if not is_move and not drop_name_matches(info.key, workflow.patterns):
                continue
            request = _request_for(jobs, workflow, info.key, info.etag)
            if request is not None:
                scan.requests.append(request)
        if page:
            scan.after = page[-1].key
        if not more:
            scan.after, scan.wrapped = None, True
            break
        if time.monotonic() > deadline:
            break
    return scan


def _request_for(jobs: JobStore, workflow: BundleWorkflow, key: str, etag: str) -> BundleRequest | None:
    known = jobs.by_source(workflow.name, key)
    for job in known:
        if job.source_etag is None:
            # the front door is still uploading this object, and will launch the run itself
            return None
        if job.source_etag == etag:
            if job.origin == "sensor" and not job.complete and job.run_id is None:
                # requested before but not started (or the tick failed after creating the job): ask again
                return BundleRequest(job, run_key(key, etag))
            return None
    if key.endswith(MOVE_SUFFIX):
        return None  # move documents come only from the front door, which creates their job
    job = jobs.create(workflow.name, source_key=key, source_etag=etag, origin="sensor", task="open tar")
    return BundleRequest(job, run_key(key, etag))
