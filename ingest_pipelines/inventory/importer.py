"""One report, start to finish: verified manifest -> rows -> diff -> Batch Operations manifest ->
tag filter -> gateway -> history -> Indexed tag -> results report and snapshot for the next diff."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from botocore.exceptions import BotoCoreError, ClientError

from ingest_pipelines.inventory.batch_manifest import encode_key, results_csv, write_batch_manifest_batches
from ingest_pipelines.inventory.config import InventoryWorkflow
from ingest_pipelines.inventory.diff import InventoryDiffResult, ReportSnapshots, diff_inventory, spill_folder
from ingest_pipelines.inventory.gateway import GatewayClient
from ingest_pipelines.inventory.history import FAILED, INDEXED, ImportHistory
from ingest_pipelines.inventory.manifest import InventoryManifest, ReportRef, load_manifest, normalize_prefix
from ingest_pipelines.inventory.reader import ReadStats, read_inventory
from ingest_pipelines.inventory.tags import (
    QUALIFIED,
    PropertiesError,
    check_record_size,
    evaluate_tags,
    parse_properties,
    parse_properties_uri,
    tags_with_indexed,
)
from ingest_pipelines.state import StateStore
from ingest_pipelines.storage.s3 import S3Store, is_not_found

#: outcomes of one candidate, also the metadata names of their counts.
OBJECT_STATUSES = ("indexed", "already_indexed", "skipped_invalid", "skipped_non_qualified", "failed", "missing")
#: the counts of a report's import (ReportResult.counts), also metadata names.
REPORT_COUNTS = (
    "rows",
    "new",
    "changed",
    "unchanged",
    "deleted",
    "not_images",
    "candidates",
    "malformed_rows",
    "malformed_files",
    *OBJECT_STATUSES,
)
#: how many keys / reasons metadata lists at most.
MAX_LISTED = 100
#: candidates handed to the thread pool at a time (bounds pending futures on a first, full run).
CHUNK = 1000
MAX_PROPERTIES_BYTES = 400 * 1024


@dataclass(frozen=True)
class ObjectResult:
    key: str
    version_id: str | None
    status: str
    reason: str = ""
    error_code: str = ""
    attempts: int = 0
    #: the gateway never accepted it after every attempt
    dead_lettered: bool = False


@dataclass
class ReportResult:
    """Counts and examples of one report's import: what the materialization's metadata shows."""

    report: str
    source_bucket: str
    file_format: str
    previous_report: str | None
    rows: int
    new: int
    changed: int
    unchanged: int
    deleted: int
    not_images: int
    candidates: int
    statuses: Counter[str]
    malformed_rows: int
    malformed_files: int
    malformed_examples: list[str]
    dead_lettered: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    batch_manifest: str = ""
    results_report: str = ""

    @property
    def failed(self) -> int:
        return self.statuses["failed"]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.malformed_files == 0

    def counts(self) -> dict[str, int]:
        base = {
            "rows": self.rows,
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "not_images": self.not_images,
            "candidates": self.candidates,
            "malformed_rows": self.malformed_rows,
            "malformed_files": self.malformed_files,
        }
        return {**base, **{status: self.statuses[status] for status in OBJECT_STATUSES}}


class ReportOutcomes:
    """What each report's latest run left failing, in the state store, so the check of a date covers every
    report of that date (several source buckets or configs deliver on one day; each has its own run):
    `{workflow}/inventory/outcomes/{date}/{source-bucket}/{config-id}/{timestamp}.json`."""

    def __init__(self, state: StateStore, workflow: str):
        self.state = state
        self.base = f"{workflow}/inventory/outcomes/"

    def save(self, ref: ReportRef, result: ReportResult) -> None:
        self.state.put_json(
            f"{self.base}{ref.date}/{ref.series}/{ref.timestamp}.json",
            {
                "report": result.report,
                "failed": result.failed,
                "malformed_files": result.malformed_files,
                "dead_lettered": result.dead_lettered,
                "failures": result.failures,
            },
        )

    def for_date(self, date: str) -> dict[str, Any]:
        """Merged outcome of every report of `date` that has run: failed, malformed_files, dead_lettered,
        failures (at most MAX_LISTED each) and the reports."""
        merged: dict[str, Any] = {"failed": 0, "malformed_files": 0, "dead_lettered": [], "failures": {}, "reports": []}
        for key in sorted(self.state.keys(f"{self.base}{date}/")):
            outcome = self.state.get_json(key) if key.endswith(".json") else None
            if not outcome:
                continue
            merged["reports"].append(outcome["report"])
            merged["failed"] += outcome["failed"]
            merged["malformed_files"] += outcome["malformed_files"]
            merged["dead_lettered"] = (merged["dead_lettered"] + outcome["dead_lettered"])[:MAX_LISTED]
            for name, reason in outcome["failures"].items():
                if len(merged["failures"]) < MAX_LISTED:
                    merged["failures"][name] = reason
        return merged


class InventoryImport:
    """Imports reports of one workflow. `store` is the inventory source (reports + Batch manifests);
    the objects a report lists are read with the same client, in the report's sourceBucket."""

    def __init__(
        self,
        workflow: InventoryWorkflow,
        store: S3Store,
        state: StateStore,
        history: ImportHistory,
        gateway: GatewayClient,
        log: Any = None,
    ):
        self.workflow = workflow
        self.store = store
        self.client = store.client
        self.history = history
        self.gateway = gateway
        self.snapshots = ReportSnapshots(state, workflow.name)
        self.outcomes = ReportOutcomes(state, workflow.name)
        self.log = log or logging.getLogger(__name__)
        self._gateway_slots = threading.Semaphore(workflow.gateway.concurrency)

    # ------------------------------------------------------------------ the report

    def import_report(self, ref: ReportRef) -> ReportResult:
        with tempfile.TemporaryDirectory(prefix="inventory-import-", dir=spill_folder(self.workflow.spillDir)) as tmp:
            return self._import_report(ref, Path(tmp))

    def _import_report(self, ref: ReportRef, workdir: Path) -> ReportResult:
        manifest = load_manifest(self.client, self.store.bucket, ref)
        stats = ReadStats()
        previous_stamp = self.snapshots.previous(ref)
        previous: Path | None = None
        if previous_stamp:
            previous = self.snapshots.download(ref, previous_stamp, workdir / "previous.parquet")
        snapshot_path = workdir / "snapshot.parquet"
        # streamed: the report, the previous snapshot and the candidates stay on local disk; memory
        # holds one key range (diff.PARTITION_ROWS rows) of the report at a time
        diff = diff_inventory(
            read_inventory(self.client, self.store.bucket, manifest, stats, workdir=workdir), previous, workdir / "diff", snapshot_path
        )
        (workdir / "previous.parquet").unlink(missing_ok=True)
        self.log.info(
            f"{ref.manifest_key}: {stats.rows} rows, {diff.new} new, {diff.changed} changed, {diff.deleted} deleted, "
            f"{diff.candidates} candidates (previous report: {previous_stamp or 'none'}; {diff.key_ranges} key range(s))"
        )
        batch_key = self._write_batch_manifest(manifest, diff, workdir)
        result = ReportResult(
            report=f"s3://{self.store.bucket}/{ref.manifest_key}",
            source_bucket=manifest.source_bucket,
            file_format=manifest.file_format,
            previous_report=previous_stamp,
            rows=stats.rows,
            new=diff.new,
            changed=diff.changed,
            unchanged=diff.unchanged,
            deleted=diff.deleted,
            not_images=diff.not_images,
            candidates=diff.candidates,
            statuses=Counter(),
            malformed_rows=stats.malformed_rows,
            malformed_files=stats.malformed_files,
            malformed_examples=[*stats.file_errors, *stats.examples],
            batch_manifest=f"s3://{self.store.bucket}/{batch_key}",
        )
        results_key = self._report_key(ref, "results.csv")
        results_path = workdir / "results.csv"
        with results_path.open("wb") as results_file:
            for outcome in self._process_candidates(manifest.source_bucket, diff.candidate_batches()):
                result.statuses[outcome.status] += 1
                if outcome.status == "failed" and len(result.failures) < MAX_LISTED:
                    result.failures[outcome.key] = outcome.reason
                if outcome.dead_lettered and len(result.dead_lettered) < MAX_LISTED:
                    result.dead_lettered.append(outcome.key)
                results_file.write(results_csv([_result_row(manifest.source_bucket, outcome)]))
        with results_path.open("rb") as handle:
            self.client.upload_fileobj(handle, self.store.bucket, results_key)
        result.results_report = f"s3://{self.store.bucket}/{results_key}"
        # saved last: a run that dies before this point re-diffs against the same previous report
        self.snapshots.upload(ref, snapshot_path)
        self.outcomes.save(ref, result)
        return result

    def _report_key(self, ref: ReportRef, name: str) -> str:
        prefix = normalize_prefix(self.store.prefix) + normalize_prefix(self.workflow.batchManifestPrefix)
        return f"{prefix}{ref.series}/{ref.timestamp}/{name}"

    def _write_batch_manifest(self, manifest: InventoryManifest, diff: InventoryDiffResult, workdir: Path) -> str:
        key = self._report_key(manifest.ref, "manifest.csv")
        path = workdir / "manifest.csv"
        write_batch_manifest_batches(manifest.source_bucket, diff.candidate_batches(), diff.versioned, path)
        with path.open("rb") as handle:
            self.client.upload_fileobj(handle, self.store.bucket, key)
        return key

    def _process_candidates(self, bucket: str, candidates: Iterable[pa.RecordBatch]) -> Iterator[ObjectResult]:
        with ThreadPoolExecutor(max_workers=self.workflow.threads, thread_name_prefix="inventory") as pool:
            for batch in candidates:
                for start in range(0, batch.num_rows, CHUNK):
                    rows = batch.slice(start, CHUNK).to_pylist()
                    yield from pool.map(lambda row: self._process_guarded(bucket, row), rows)

    def _process_guarded(self, bucket: str, row: dict[str, Any]) -> ObjectResult:
        # one object's unforeseen error (a transport error, a bug) must not lose the rest of the report
        try:
            return self.process_object(bucket, row)
        except Exception as exc:
            self.log.exception(f"s3://{bucket}/{row['key']}: unexpected error")
            return ObjectResult(row["key"], row.get("version_id"), "failed", f"{type(exc).__name__}: {exc}", "InternalError")

    # ------------------------------------------------------------------ one object

    def process_object(self, bucket: str, row: dict[str, Any]) -> ObjectResult:
        """Tags -> rules -> history -> properties -> image -> gateway -> history -> Indexed tag."""
        key, version_id, etag = row["key"], row.get("version_id"), row.get("etag")
        version = {"VersionId": version_id} if version_id else {}
        try:
            tag_set = self.client.get_object_tagging(Bucket=bucket, Key=key, **version)["TagSet"]
        except ClientError as exc:
            if is_not_found(exc):
                return ObjectResult(key, version_id, "missing", "object no longer exists")
            return ObjectResult(key, version_id, "failed", f"GetObjectTagging failed: {exc}", "TagLookupFailed")
        decision = evaluate_tags(key, tag_set)
        if decision.verdict != QUALIFIED:
            return ObjectResult(key, version_id, decision.verdict, decision.reason)
        assert decision.user_id is not None
        if self.history.is_indexed(bucket, key, version_id, etag):
            # indexed before, but the run died before tagging: put the tag on, never call the gateway again
            return self._tag(bucket, key, version_id, tag_set, ObjectResult(key, version_id, "already_indexed", "in import history"))
        try:
            properties = self._properties(decision.properties_uri)
            check_record_size(decision.user_id, properties)
        except PropertiesError as exc:
            self.history.record(bucket, key, version_id, etag, decision.user_id, FAILED, 0, str(exc))
            return ObjectResult(key, version_id, "failed", str(exc), "InvalidProperties")
        try:
            image = self.client.get_object(Bucket=bucket, Key=key, **version)["Body"].read()
        except ClientError as exc:
            if is_not_found(exc):
                return ObjectResult(key, version_id, "missing", "object no longer exists")
            return ObjectResult(key, version_id, "failed", f"GetObject failed: {exc}", "ReadFailed")
        with self._gateway_slots:
            # URL-encoded like the Batch manifest: a header is latin-1 and a key may hold any character
            idempotency_key = f"{bucket}/{encode_key(key)}@{version_id or etag}"
            answer = self.gateway.register(decision.user_id, properties, image, idempotency_key=idempotency_key)
        if not answer.ok:
            self.history.record(bucket, key, version_id, etag, decision.user_id, FAILED, answer.attempts, answer.response)
            reason = f"gateway failed after {answer.attempts} attempt(s): {answer.error_code} {answer.response[:200]}".strip()
            return ObjectResult(key, version_id, "failed", reason, answer.error_code, answer.attempts, dead_lettered=True)
        self.history.record(bucket, key, version_id, etag, decision.user_id, INDEXED, answer.attempts, answer.response)
        return self._tag(bucket, key, version_id, tag_set, ObjectResult(key, version_id, "indexed", "indexed", attempts=answer.attempts))

    def _tag(self, bucket: str, key: str, version_id: str | None, tag_set: list[dict[str, str]], outcome: ObjectResult) -> ObjectResult:
        version = {"VersionId": version_id} if version_id else {}
        try:
            self.client.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": tags_with_indexed(tag_set)}, **version)
        except ClientError as exc:
            # history already says indexed: the next run of this date only puts the tag on
            return ObjectResult(key, version_id, "failed", f"indexed, but tagging Indexed=True failed: {exc}", "TaggingFailed")
        return outcome

    def _properties(self, uri: str | None) -> dict[str, str]:
        if not uri:
            return {}
        bucket, key = parse_properties_uri(uri)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise PropertiesError(f"Properties file {uri} cannot be read: {exc}") from None
        if int(response.get("ContentLength") or 0) > MAX_PROPERTIES_BYTES:
            response["Body"].close()
            raise PropertiesError(f"Properties file {uri} is larger than 400 KB")
        return parse_properties(response["Body"].read(), uri)


def _result_row(bucket: str, outcome: ObjectResult) -> tuple[str, str, str | None, str, str, str]:
    status = "failed" if outcome.status == "failed" else "succeeded"
    message = outcome.status if outcome.status == "indexed" else f"{outcome.status}: {outcome.reason}"
    return (bucket, outcome.key, outcome.version_id, status, outcome.error_code, message)
