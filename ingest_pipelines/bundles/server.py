"""The HTTP front door of bundle workflows, with Pacifica Ingest's API: POST /ingest (/upload), POST /move,
GET /get_state. Uploads stream to the drop location; the run is launched through an injected `launch`
(the first attempt of the job; reconciliation retries it when that run dies or cannot be launched)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.bundles.format import TASK_OPEN_TAR, TASK_UPLOADING, BundleError, parse_metadata
from ingest_pipelines.bundles.ingest import MOVE_SUFFIX, resolve_move_source
from ingest_pipelines.bundles.jobs import JobNotFound, JobState, JobStore
from ingest_pipelines.bundles.validator import MAX_METADATA_BYTES
from ingest_pipelines.config import IngestConfig
from ingest_pipelines.storage import open_store

log = logging.getLogger(__name__)

#: launch(workflow, job) -> the job's state once its first attempt was requested (or its failure noted for a
#: retry); the Dagster layer provides it (defs/bundles/reconcile.py FrontDoorReconciler.launch_new)
Launch = Callable[[BundleWorkflow, JobState], JobState]

#: while the front door receives a job, the job's run_id names the receiving process: "upload:{host}:{pid}"
UPLOAD_OWNER = "upload:"


def upload_owner() -> str:
    return f"{UPLOAD_OWNER}{socket.gethostname()[:40]}:{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_orphaned_uploads(jobs: JobStore, workflow: str) -> list[int]:
    """Mark FAILED the jobs a front door process on this host was receiving when it died (kill -9, crash):
    their body never fully arrived, the client got no answer and uploads again. Returns their ids."""
    host_prefix = f"{UPLOAD_OWNER}{socket.gethostname()[:40]}:"
    failed = []
    for job in jobs.uploading(workflow):
        owner = job.run_id or ""
        pid = owner[len(host_prefix) :]
        if not owner.startswith(host_prefix) or not pid.isdigit():
            continue  # another host's front door, or not a front door upload
        if int(pid) != os.getpid() and _process_alive(int(pid)):
            continue
        jobs.fail(job.job_id, TASK_UPLOADING, f"the front door (process {pid}) stopped while receiving this upload; upload it again")
        failed.append(job.job_id)
    return failed


class AsyncBodyReader:
    """A blocking `read()` over the request body, for boto3 running in a worker thread: it pulls chunks
    from the event loop as each read asks, so the body is never held in memory whole."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        # made on the event loop; read() runs in boto3's transfer threads, which need the loop's token
        self._token = anyio.lowlevel.current_token()
        self._chunks = chunks
        # a bytearray grows in place: `bytes += chunk` would copy the whole buffer for every 64 KiB chunk
        self._buffer = bytearray()
        self._done = False
        self.size = 0

    async def _fill(self, size: int) -> None:
        # on the event loop: gather chunks until `size` bytes are buffered (one thread hop per read, not per chunk)
        while not self._done and (size < 0 or len(self._buffer) < size):
            try:
                self._buffer += await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True

    def read(self, size: int = -1) -> bytes:
        if not self._done and (size < 0 or len(self._buffer) < size):
            anyio.from_thread.run(self._fill, size, token=self._token)
        if size < 0 or size >= len(self._buffer):
            data, self._buffer = bytes(self._buffer), bytearray()
        else:
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


class FrontDoor:
    """The bundle workflows of one ingest.yaml behind Pacifica's endpoints."""

    def __init__(self, config: IngestConfig, launch: Launch | None):
        self.config = config
        self.launch = launch
        self.workflows = {w.name: w for w in config.workflows if isinstance(w, BundleWorkflow)}

    def workflow(self, request: Request) -> BundleWorkflow:
        name = request.query_params.get("workflow")
        if name:
            if name not in self.workflows:
                raise _HTTPError(404, f"no bundle workflow named {name!r} (known: {', '.join(sorted(self.workflows))})")
            return self.workflows[name]
        if len(self.workflows) == 1:
            return next(iter(self.workflows.values()))
        raise _HTTPError(400, f"several bundle workflows: add ?workflow=NAME (one of {', '.join(sorted(self.workflows))})")

    def jobs(self, workflow: BundleWorkflow) -> JobStore:
        return JobStore(workflow.jobs_url(self.config))

    def source(self, workflow: BundleWorkflow) -> Any:
        return open_store(self.config.source(workflow.source or ""))

    async def ingest(self, request: Request) -> JSONResponse:
        workflow = self.workflow(request)
        jobs = self.jobs(workflow)
        job = await anyio.to_thread.run_sync(
            lambda: jobs.create(workflow.name, origin="ingest", task=TASK_UPLOADING, run_id=upload_owner())
        )
        key = f"{workflow.uploadPrefix}{job.job_id}.tar"
        reader = AsyncBodyReader(request.stream())

        def upload() -> JobState:
            store = self.source(workflow)
            jobs.update(job.job_id, source_key=key)
            store.upload_fileobj(key, reader)
            info = store.head(key)
            # received: from here on the job is reconciliation's (task no longer UPLOADING, no upload owner)
            return jobs.update(job.job_id, source_etag=info.etag if info else "", task=TASK_OPEN_TAR, run_id=None)

        try:
            job = await anyio.to_thread.run_sync(upload)
        except Exception as exc:
            log.exception("job %s: upload failed", job.job_id)
            message = f"upload failed: {exc or type(exc).__name__}"  # ClientDisconnect has no message
            failed = await anyio.to_thread.run_sync(lambda: jobs.fail(job.job_id, TASK_UPLOADING, message))
            return JSONResponse(failed.to_api(), status_code=500)
        log.info("job %s: received %d bytes as %s", job.job_id, reader.size, key)
        return await self._launch(workflow, jobs, job)

    async def move(self, request: Request) -> JSONResponse:
        workflow = self.workflow(request)
        body = await _bounded_body(request, MAX_METADATA_BYTES)
        try:
            metadata = parse_metadata(body)
            store = self.source(workflow)
            for entry in metadata.files.values():
                if not entry.source:
                    raise BundleError("load metadata", f"{entry.path}: a move entry needs 'source'")
                resolve_move_source(store, entry.source)
        except BundleError as exc:
            raise _HTTPError(400, f"{exc.task}: {exc.message}") from None
        jobs = self.jobs(workflow)

        def store_document() -> JobState:
            job = jobs.create(workflow.name, origin="move", task=TASK_UPLOADING, run_id=upload_owner())
            key = f"{workflow.uploadPrefix}{job.job_id}{MOVE_SUFFIX}"
            jobs.update(job.job_id, source_key=key)
            store.put_bytes(key, body, content_type="application/json")
            info = store.head(key)
            return jobs.update(job.job_id, source_etag=info.etag if info else "", task=TASK_OPEN_TAR, run_id=None)

        job = await anyio.to_thread.run_sync(store_document)
        return await self._launch(workflow, jobs, job)

    async def _launch(self, workflow: BundleWorkflow, jobs: JobStore, job: JobState) -> JSONResponse:
        if self.launch is None:
            # --no-launch: the drop sensor's reconciliation requests the run
            return JSONResponse(job.to_api())
        launch = self.launch
        state = await anyio.to_thread.run_sync(lambda: launch(workflow, job))
        log.info(
            "job %s: attempt %d requested (run %s)%s",
            job.job_id,
            state.attempt,
            state.run_id,
            f": {state.exception}" if state.exception else "",
        )
        return JSONResponse(state.to_api())

    async def get_state(self, request: Request) -> JSONResponse:
        raw = request.query_params.get("job_id", "")
        if not (raw.isascii() and raw.isdigit()):  # "٣".isdigit() is true too
            raise _HTTPError(400, "job_id must be a number")
        job_id = int(raw)
        if request.query_params.get("workflow") or len(self.workflows) <= 1:
            candidates = [self.workflow(request)]
        else:
            candidates = list(self.workflows.values())
        seen: set[str] = set()
        for workflow in candidates:
            url = workflow.jobs_url(self.config)
            if url in seen:
                continue
            seen.add(url)
            try:
                job = await anyio.to_thread.run_sync(lambda url=url: JobStore(url).get(job_id))
            except JobNotFound:
                continue
            if job.workflow in self.workflows:
                return JSONResponse(job.to_api())
        raise _HTTPError(404, f"job {job_id} not found")


async def _bounded_body(request: Request, limit: int) -> bytes:
    """The whole body of a small document (a move document is metadata): more than `limit` bytes is a 413,
    found from Content-Length or while reading, so a huge body is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _HTTPError(413, f"body of {declared} bytes is larger than {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _HTTPError(413, f"body is larger than {limit} bytes")
    return bytes(body)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


async def _error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, _HTTPError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


def build_app(config: IngestConfig, launch: Launch | None) -> Starlette:
    """The ASGI app; `launch` requests the first attempt of a received job (None: leave it to the drop sensor)."""
    door = FrontDoor(config, launch)
    if not door.workflows:
        raise ValueError(f"{config.path or 'ingest.yaml'}: no workflow of kind 'bundle' to serve")
    for workflow in door.workflows.values():
        orphaned = fail_orphaned_uploads(door.jobs(workflow), workflow.name)
        if orphaned:
            log.warning(
                "workflow %s: marked FAILED %d upload(s) a stopped front door left: jobs %s", workflow.name, len(orphaned), orphaned
            )
    routes = [
        Route("/ingest", door.ingest, methods=["POST"]),
        Route("/upload", door.ingest, methods=["POST"]),
        Route("/move", door.move, methods=["POST"]),
        Route("/get_state", door.get_state, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={_HTTPError: _error})
    app.state.front_door = door
    return app
