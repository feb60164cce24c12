"""Finding new bundles in the drop location: a bounded, resumable listing that creates one job per
new object version (key + ETag), skipping objects that already have a job (e.g. front door uploads).
Their runs are requested by reconciliation (bundles/attempts.py), like every unfinished job's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.ingest import MOVE_SUFFIX, drop_name_matches
from ingest_pipelines.bundles.jobs import JobState, JobStore
from ingest_pipelines.storage import ObjectStore


@dataclass
class DropScan:
    #: jobs created by this scan (their runs are requested by reconciliation, bundles/attempts.py)
    new_jobs: list[JobState] = field(default_factory=list)
    #: where the next tick resumes listing (None: from the start)
    after: str | None = None
    listed: int = 0
    #: true when this tick reached the end of the listing
    wrapped: bool = False


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
            if info.key.endswith(MOVE_SUFFIX) or not drop_name_matches(info.key, workflow.patterns):
                continue  # move documents come only from the front door, which creates their job
            job = _job_for(jobs, workflow, info.key, info.etag)
            if job is not None:
                scan.new_jobs.append(job)
        if page:
            scan.after = page[-1].key
        if not more:
            scan.after, scan.wrapped = None, True
            break
        if time.monotonic() > deadline:
            break
    return scan


def _job_for(jobs: JobStore, workflow: BundleWorkflow, key: str, etag: str) -> JobState | None:
    """A new job for a new object version; None when a job has it (or the front door is still uploading it)."""
    for job in jobs.by_source(workflow.name, key):
        if job.source_etag is None or job.source_etag == etag:
            return None
    return jobs.create(workflow.name, source_key=key, source_etag=etag, origin="sensor", task="open tar")
