"""S3 Inventory reports: find them in the real layout and read a verified manifest.json.

Layout: `{prefix}/{source-bucket}/{config-id}/{YYYY-MM-DDTHH-MMZ}/manifest.json` + `manifest.checksum`.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import orjson
from botocore.exceptions import ClientError

from ingest_pipelines.storage.s3 import is_not_found

#: the folder S3 Inventory names after the report time (UTC).
REPORT_FOLDER = re.compile(r"^(?P<date>\d{4}-\d{2}-\d{2})T\d{2}-\d{2}Z$")
#: folders that hold other things than reports: Batch Operations completion reports, Athena/Hive symlinks.
IGNORED_FOLDERS = frozenset({"reports", "hive"})
FILE_FORMATS = ("CSV", "Parquet", "ORC")
#: what the sensor puts in place of a manifest.checksum it cannot read: the run reads it again and fails with the reason.
UNREADABLE_CHECKSUM = "unreadable"
#: how many days before a series' newest report the sensor still looks for reports delivered late.
LATE_REPORT_DAYS = 7


class ManifestError(RuntimeError):
    """A report cannot be used: missing or corrupt manifest.json / manifest.checksum."""


def normalize_prefix(prefix: str) -> str:
    """S3 Inventory writes `{prefix}/...`: a prefix without a trailing slash still means a folder."""
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


@dataclass(frozen=True, order=True)
class ReportRef:
    """One delivered report: where its manifest is and which source bucket / config / time it covers."""

    #: bucket key of the report folder, ending in `/` (e.g. `inv/images/daily/2024-05-01T01-00Z/`).
    folder: str
    source_bucket: str
    config_id: str
    #: the folder name, `YYYY-MM-DDTHH-MMZ`
    timestamp: str

    @property
    def date(self) -> str:
        return self.timestamp[:10]

    @property
    def manifest_key(self) -> str:
        return self.folder + "manifest.json"

    @property
    def checksum_key(self) -> str:
        return self.folder + "manifest.checksum"

    @property
    def series(self) -> str:
        """`{source-bucket}/{config-id}`: reports of one series are diffed against each other."""
        return f"{self.source_bucket}/{self.config_id}"


def parse_report_key(key: str, prefix: str = "") -> ReportRef | None:
    """The report a `manifest.json` / `manifest.checksum` bucket key belongs to, or None when the key
    is not a report in the S3 Inventory layout (including anything under `reports/` or `hive/`)."""
    prefix = normalize_prefix(prefix)
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix) :].split("/")
    if len(parts) != 4 or parts[3] not in ("manifest.json", "manifest.checksum"):
        return None
    source_bucket, config_id, timestamp = parts[:3]
    if not source_bucket or not config_id or not REPORT_FOLDER.match(timestamp):
        return None
    if IGNORED_FOLDERS & {source_bucket, config_id}:
        return None
    return ReportRef(f"{prefix}{source_bucket}/{config_id}/{timestamp}/", source_bucket, config_id, timestamp)


@dataclass(frozen=True)
class DataFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True)
class InventoryManifest:
    """manifest.json of one report; `files` are bucket keys in the inventory bucket."""

    ref: ReportRef
    source_bucket: str
    file_format: str
    #: column names in file order (CSV: from `fileSchema`; Parquet/ORC: the files carry their schema)
    file_schema: list[str]
    files: list[DataFile]
    #: MD5 of manifest.json (the content of manifest.checksum)
    checksum: str
    creation_timestamp: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def parse_file_schema(text: str, file_format: str) -> list[str]:
    """CSV: `Bucket, Key, VersionId, ...`; Parquet/ORC: a schema string (`message s3.inventory {...}`,
    `struct<bucket:string,...>`) from which the field names are taken."""
    if file_format == "CSV":
        return [part.strip() for part in text.split(",") if part.strip()]
    if file_format == "ORC":
        inner = text.strip()
        inner = inner[inner.find("<") + 1 : inner.rfind(">")] if "<" in inner else inner
        return [part.split(":", 1)[0].strip() for part in inner.split(",") if part.strip()]
    return re.findall(r"(?:required|optional)\s+\w+\s+(\w+)", text)


def _get(client: Any, bucket: str, key: str) -> bytes | None:
    try:
        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise ManifestError(f"s3://{bucket}/{key}: cannot read: {exc}") from exc


def read_checksum(client: Any, bucket: str, ref: ReportRef) -> str | None:
    """The MD5 in manifest.checksum (AWS writes it after manifest.json: no checksum, report incomplete)."""
    data = _get(client, bucket, ref.checksum_key)
    if data is None:
        return None
    text = data.decode("ascii", "replace").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise ManifestError(f"s3://{bucket}/{ref.checksum_key}: not an MD5 checksum: {text[:64]!r}")
    return text


def load_manifest(client: Any, bucket: str, ref: ReportRef) -> InventoryManifest:
    """Read manifest.json, verify it against manifest.checksum and validate its fields."""
    where = f"s3://{bucket}/{ref.manifest_key}"
    checksum = read_checksum(client, bucket, ref)
    if checksum is None:
        raise ManifestError(f"{where}: manifest.checksum is missing (report not complete)")
    data = _get(client, bucket, ref.manifest_key)
    if data is None:
        raise ManifestError(f"{where}: manifest.json is missing")
    actual = hashlib.md5(data).hexdigest()
    if actual != checksum:
        raise ManifestError(f"{where}: MD5 mismatch (manifest.checksum says {checksum}, manifest.json is {actual})")
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"{where}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    file_format = raw.get("fileFormat")
    if file_format not in FILE_FORMATS:
        raise ManifestError(f"{where}: fileFormat {file_format!r} is not one of {', '.join(FILE_FORMATS)}")
    source_bucket = raw.get("sourceBucket")
    if not isinstance(source_bucket, str) or not source_bucket:
        raise ManifestError(f"{where}: sourceBucket is missing")
    if source_bucket != ref.source_bucket:
        raise ManifestError(f"{where}: sourceBucket {source_bucket!r} is not the report folder's source bucket {ref.source_bucket!r}")
    if not isinstance(raw.get("fileSchema"), str) or not raw["fileSchema"].strip():
        raise ManifestError(f"{where}: fileSchema is missing")
    schema = parse_file_schema(raw["fileSchema"], file_format)
    if file_format == "CSV" and "Key" not in schema:
        raise ManifestError(f"{where}: fileSchema {raw.get('fileSchema')!r} has no Key column")
    # no `files` is a broken manifest, not an empty report (whose empty snapshot would make the next day re-check everything)
    if not isinstance(raw.get("files"), list):
        raise ManifestError(f"{where}: files is missing or not a list")
    files = []
    for index, item in enumerate(raw["files"]):
        try:
            files.append(DataFile(key=str(item["key"]), size=int(item.get("size", -1)), md5=str(item["MD5checksum"]).lower()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: files[{index}] is missing key or MD5checksum ({exc})") from None
    return InventoryManifest(
        ref=ref,
        source_bucket=source_bucket,
        file_format=file_format,
        file_schema=schema,
        files=files,
        checksum=checksum,
        creation_timestamp=raw.get("creationTimestamp"),
        raw=raw,
    )


# --------------------------------------------------------------------------- finding reports


class ListingBudget:
    """Bounds a sensor tick: at most `max_calls` list calls and `seconds` of wall time."""

    def __init__(self, max_calls: int, seconds: float):
        self.calls = 0
        self.max_calls = max_calls
        self.deadline = time.monotonic() + seconds

    def spend(self) -> bool:
        if self.calls >= self.max_calls or time.monotonic() >= self.deadline:
            return False
        self.calls += 1
        return True


def _folders(client: Any, bucket: str, prefix: str, budget: ListingBudget | None, start_after: str | None = None) -> Iterator[str]:
    """Sub-folder names of `prefix` (one Delimiter listing, paginated), in key order."""
    token: str | None = None
    while True:
        if budget is not None and not budget.spend():
            raise _BudgetSpent
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        if token:
            kwargs["ContinuationToken"] = token
        elif start_after:
            kwargs["StartAfter"] = start_after
        page = client.list_objects_v2(**kwargs)
        for common in page.get("CommonPrefixes", []):
            yield common["Prefix"][len(prefix) :].rstrip("/")
        if not page.get("IsTruncated"):
            return
        token = page.get("NextContinuationToken")


class _BudgetSpent(Exception):
    pass


def report_series(
    client: Any, bucket: str, prefix: str, budget: ListingBudget | None = None, resume_after: str | None = None
) -> Iterator[tuple[str, str]]:
    """(source-bucket, config-id) pairs under the prefix in key order, skipping `reports/` and `hive/`;
    with `resume_after` (`bucket/config`), only the pairs after it (earlier buckets are not listed)."""
    prefix = normalize_prefix(prefix)
    start = f"{prefix}{resume_after.split('/', 1)[0]}" if resume_after else None
    for source_bucket in _folders(client, bucket, prefix, budget, start_after=start):
        if source_bucket in IGNORED_FOLDERS:
            continue
        for config_id in _folders(client, bucket, f"{prefix}{source_bucket}/", budget):
            if config_id not in IGNORED_FOLDERS and (resume_after is None or f"{source_bucket}/{config_id}" > resume_after):
                yield source_bucket, config_id


def report_folders(
    client: Any,
    bucket: str,
    prefix: str,
    source_bucket: str,
    config_id: str,
    after: str | None = None,
    budget: ListingBudget | None = None,
    since: str | None = None,
) -> Iterator[ReportRef]:
    """Report folders of one series in time order: those after the `after` timestamp, or with `since`
    (a date or timestamp) every one from then on."""
    base = f"{normalize_prefix(prefix)}{source_bucket}/{config_id}/"
    start_after = f"{base}{since}" if since else f"{base}{after}/" if after else None
    for name in _folders(client, bucket, base, budget, start_after=start_after):
        if REPORT_FOLDER.match(name) and (since is not None or after is None or name > after):
            yield ReportRef(f"{base}{name}/", source_bucket, config_id, name)


def late_window_start(mark: str) -> str:
    """The first day the sensor re-lists for late reports of a series whose newest report is `mark`."""
    return (date.fromisoformat(mark[:10]) - timedelta(days=LATE_REPORT_DAYS)).isoformat()


@dataclass
class FoundReports:
    """What one sensor tick found: complete reports (with their checksum) and the new per-series marks."""

    reports: list[tuple[ReportRef, str]]
    #: `{source-bucket}/{config-id}` -> the newest timestamp whose report (and all before it) was found complete
    marks: dict[str, str]
    #: False when the budget ran out before every series was visited
    complete: bool
    #: series to start from next tick when not complete
    resume_after: str | None = None
    #: reports whose manifest.checksum could not be read (the reason), requested anyway
    problems: list[str] = field(default_factory=list)
    #: `{source-bucket}/{config-id}` -> timestamps found complete within LATE_REPORT_DAYS of the mark
    seen: dict[str, list[str]] = field(default_factory=dict)


def find_new_reports(
    client: Any,
    bucket: str,
    prefix: str,
    marks: dict[str, str],
    budget: ListingBudget,
    resume_after: str | None = None,
    seen: dict[str, list[str]] | None = None,
    until: str | None = None,
) -> FoundReports:
    """Complete reports newer than each series' mark, and reports delivered late (older than the mark,
    within LATE_REPORT_DAYS of it, not in `seen`). A report without manifest.checksum yet stops its
    series' mark (AWS writes the checksum last), so it is found again once it is complete. A series
    without a `seen` entry (a cursor from before late reports were looked for) takes everything up to
    its mark as seen. A report dated after `until` (the last date with a partition) waits, like an
    incomplete one, until its date comes."""
    marks = dict(marks)
    seen_sets = {series: set(stamps) for series, stamps in (seen or {}).items()}
    found: list[tuple[ReportRef, str]] = []
    problems: list[str] = []
    last_series: str | None = None

    def result(complete: bool) -> FoundReports:
        pruned = {
            series: sorted(stamp for stamp in stamps if series in marks and stamp[:10] >= late_window_start(marks[series]))
            for series, stamps in seen_sets.items()
        }
        return FoundReports(
            found,
            marks,
            complete=complete,
            resume_after=None if complete else (last_series or resume_after),
            problems=problems,
            seen={series: stamps for series, stamps in pruned.items() if stamps},
        )

    try:
        for source_bucket, config_id in report_series(client, bucket, prefix, budget, resume_after):
            series = f"{source_bucket}/{config_id}"
            mark = marks.get(series)
            known = seen_sets.get(series)
            series_seen = seen_sets.setdefault(series, set())
            advancing = True
            since = late_window_start(mark) if mark else None
            for ref in report_folders(client, bucket, prefix, source_bucket, config_id, mark, budget, since=since):
                late = mark is not None and ref.timestamp <= mark
                if late and known is None:
                    # a cursor from before late reports were looked for: what it passed was handled
                    series_seen.add(ref.timestamp)
                    continue
                if late and ref.timestamp in known:
                    continue
                if until is not None and ref.date > until:
                    # no partition for that date yet: a run request would fail the whole tick
                    problems.append(f"{ref.manifest_key}: inventory date {ref.date} is after {until}; requested once that day has come")
                    advancing = False
                    continue
                try:
                    checksum = read_checksum(client, bucket, ref)
                except ManifestError as exc:
                    # one bad report must not fail every tick (and hide every later report): its run
                    # reads it again and fails with the reason, in the UI
                    checksum = UNREADABLE_CHECKSUM
                    problems.append(f"{exc}; its run is requested anyway and fails with this reason")
                if checksum is None:
                    advancing = advancing and late
                    continue
                found.append((ref, checksum))
                series_seen.add(ref.timestamp)
                if advancing and not late:
                    marks[series] = ref.timestamp
            last_series = series
    except _BudgetSpent:
        return result(complete=False)
    return result(complete=True)


def reports_for_date(client: Any, bucket: str, prefix: str, date: str) -> list[ReportRef]:
    """Every report folder delivered on `date` (YYYY-MM-DD), for a run of that partition."""
    found = []
    for source_bucket, config_id in report_series(client, bucket, prefix):
        base = f"{normalize_prefix(prefix)}{source_bucket}/{config_id}/"
        # a Delimiter listing with a partial folder name as prefix returns the matching folders
        page_prefix = f"{base}{date}T"
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": page_prefix, "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            page = client.list_objects_v2(**kwargs)
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(base) :].rstrip("/")
                if REPORT_FOLDER.match(name):
                    found.append(ReportRef(common["Prefix"], source_bucket, config_id, name))
            if not page.get("IsTruncated"):
                break
            token = page.get("NextContinuationToken")
    return sorted(found)
