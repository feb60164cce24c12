"""Sync change detection at scale, without Dagster: run_tick's snapshot, a CDC pass with 10 changes and events mode, on a versioned bucket;
against a bare boto3 ListObjectVersions pass over the same bucket in the same run (a moto server subprocess, prefilled in its backend)."""

from __future__ import annotations

import argparse
import bisect
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import peak_rss_mib, print_ratios, timed
from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS

REPO_ROOT = Path(__file__).resolve().parent.parent
BUCKET = "scale"
WORKFLOW = "scale"
#: the product's ListObjectVersions MaxKeys (SyncWorkflow.pageSize's default); the bare pass asks for the same
PAGE_SIZE = 1000
#: the bar of the issue: a tick past this would come close to Dagster's 60 s sensor timeout
TICK_BAR_SECONDS = 30.0
#: the bar of the issue: the CDC pass may take at most this much longer than a bare listing of the same bucket
RATIO_BAR = 1.1


def key_name(index: int) -> str:
    return f"obj/{index:07d}"


# ---------------------------------------------------------------------------------------------- the server


def _install_indexed_listing() -> None:
    """Replace moto's ListObjectVersions (in the server process) by one that seeks to the marker in a sorted name list.

    Stock moto deep-copies and sorts every version of the bucket for every page (2.7 s per page at 20,000 keys,
    O(keys) per page), so a pass would be quadratic and every figure here would measure moto. This keeps S3's
    semantics the product relies on: key order, newest version first, KeyMarker + VersionIdMarker continuation."""
    from moto.s3.models import FakeKey, S3Backend

    stock = S3Backend.list_object_versions
    sorted_names: dict[str, tuple[int, list[str]]] = {}
    lock = threading.Lock()

    class Listed:
        """One version as a page shows it: `is_latest` is set here, not on the stored object (pages run in threads)."""

        __slots__ = ("is_latest", "item")

        def __init__(self, item: Any, is_latest: bool):
            self.item = item
            self.is_latest = is_latest

        def __getattr__(self, name: str) -> Any:
            return getattr(self.item, name)

        @property
        def last_modified_ISO8601(self) -> Any:
            # the datetime, not moto's string of it: the serializer would parse that string again with dateutil (half of a
            # page's server time); the XML is the same, whole seconds and ".000Z"
            return self.item.last_modified.replace(microsecond=0)

    def list_object_versions(
        self: Any,
        bucket_name: str,
        delimiter: str | None = None,
        key_marker: str | None = None,
        max_keys: int | None = 1000,
        prefix: str = "",
        version_id_marker: str | None = None,
    ) -> tuple[list[Any], list[str], list[Any], str | None, str | None]:
        if delimiter:  # common prefixes: nothing here asks for them
            return stock(self, bucket_name, delimiter, key_marker, max_keys, prefix, version_id_marker)
        store = self.get_bucket(bucket_name).keys
        with lock:
            size, names = sorted_names.get(bucket_name, (-1, []))
            if size != len(store):  # a key was added or removed since the last sort (overwrites keep the names)
                names = sorted(list(store))
                sorted_names[bucket_name] = (len(names), names)
        limit = 1000 if max_keys is None else max_keys
        prefix = prefix or ""
        start = bisect.bisect_left(names, max(key_marker or "", prefix))
        versions: list[Any] = []
        markers: list[Any] = []
        last: Any = None
        skipping = bool(key_marker and version_id_marker)
        for position in range(start, len(names)):
            name = names[position]
            if not name.startswith(prefix):
                break  # sorted: past the prefix
            if name == key_marker and not version_id_marker:
                continue  # KeyMarker alone: the keys after it
            newest_first = list(reversed(store.getlist(name, [])))
            for rank, item in enumerate(newest_first):
                if skipping:
                    if name == key_marker:
                        skipping = item.version_id != version_id_marker
                        continue
                    skipping = False  # the marker's version is gone: go on with the next key
                if len(versions) + len(markers) >= limit:
                    return versions, [], markers, last.name, last.version_id
                (versions if isinstance(item, FakeKey) else markers).append(Listed(item, rank == 0))
                last = item
        return versions, [], markers, None, None

    S3Backend.list_object_versions = list_object_versions  # type: ignore[method-assign]


def serve(argv: list[str]) -> None:
    """The server process: fill a versioned bucket through moto's backend (no HTTP), write how long that took, serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--report", required=True)
    parser.add_argument("--stock-listing", action="store_true")
    args = parser.parse_args(argv)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from moto.server import main as moto_main

    started = time.perf_counter()
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(BUCKET, "us-east-1")
    backend.put_bucket_versioning(BUCKET, "Enabled")
    for index in range(args.keys):
        backend.put_object(BUCKET, key_name(index), b"")
    if not args.stock_listing:
        _install_indexed_listing()
    report = {"keys": args.keys, "build_seconds": time.perf_counter() - started}
    Path(args.report).write_text(json.dumps(report))
    moto_main(["-H", args.host, "-p", str(args.port)])


class PrefilledMoto(MotoServer):
    """A moto server subprocess (not sharing this process's GIL) whose versioned bucket exists before it answers."""

    def __init__(self, keys: int, work: Path, stock_listing: bool = False):
        super().__init__(log_path=work / f"moto-{keys}.log")
        self.keys = keys
        self.report_path = work / f"moto-{keys}.json"
        self.stock_listing = stock_listing
        self.build_seconds = 0.0

    def command(self) -> list[str]:
        # the repository root on the path: the server process imports this module's serve()
        command = [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r}); from benchmarks.bench_scale import serve; serve(sys.argv[1:])",
        ]
        command += ["--port", str(self.port), "--keys", str(self.keys), "--report", str(self.report_path)]
        return command + (["--stock-listing"] if self.stock_listing else [])

    def start(self, timeout: float = 1800.0) -> PrefilledMoto:
        """MotoServer's start, with time for the fill (~2 min per million keys) and its report read."""
        super().start(timeout)
        self.build_seconds = json.loads(self.report_path.read_text())["build_seconds"]
        return self

    def peak_rss_mib(self) -> float | None:
        """The server process's peak resident memory (Linux), read before it stops."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()  # type: ignore[union-attr]
        except OSError:
            return None
        line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
        return int(line.split()[1]) / 1024 if line else None


# ---------------------------------------------------------------------------------------------- instruments


class RequestMeter:
    """Requests a botocore client makes, by operation, and when each was in flight (HEADs run in threads)."""

    def __init__(self, client: Any, service: str):
        self.counts: dict[str, int] = {}
        self.spans: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        client.meta.events.register(f"before-call.{service}", self._before)
        client.meta.events.register(f"after-call.{service}", self._after)

    def _before(self, event_name: str, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()
        operation = event_name.rsplit(".", 1)[-1]
        with self._lock:
            self.counts[operation] = self.counts.get(operation, 0) + 1

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        ended = time.perf_counter()
        with self._lock:
            self.spans.append((context.get("bench_started", ended), ended))

    def mark(self) -> tuple[dict[str, int], int]:
        with self._lock:
            return dict(self.counts), len(self.spans)

    def since(self, mark: tuple[dict[str, int], int]) -> tuple[dict[str, int], list[tuple[float, float]]]:
        counts, spans = mark
        with self._lock:
            diff = {op: n - counts.get(op, 0) for op, n in self.counts.items() if n - counts.get(op, 0)}
            return diff, self.spans[spans:]


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """Wall seconds during which at least one request was in flight (overlapping requests count once)."""
    total = 0.0
    end = float("-inf")
    for start, stop in sorted(spans):
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total


def timed_ledger(url: str) -> Any:
    """A SyncLedger that adds up the seconds of its reads and commits: a tick's time is then S3 + ledger + the rest."""
    from ingest_pipelines.sync.ledger import SyncLedger

    class TimedLedger(SyncLedger):
        seconds = 0.0

        def _timed(self, method: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        def load_scan(self, *args: Any, **kwargs: Any) -> Any:
            return self._timed(super().load_scan, *args, **kwargs)

        def commit_tick(self, *args: Any, **kwargs: Any) -> Any:
            return self._timed(super().commit_tick, *args, **kwargs)

        def index_range(self, *args: Any, **kwargs: Any) -> Any:
            return self._timed(super().index_range, *args, **kwargs)

        def index_get(self, *args: Any, **kwargs: Any) -> Any:
            return self._timed(super().index_get, *args, **kwargs)

    return TimedLedger(url)


def run_ticks(
    workflow: Any,
    source: Any,
    ledger: Any,
    meters: list[RequestMeter],
    done: Callable[[Any], bool],
    max_ticks: int,
    between: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Tick until `done(outcome)`; one record per tick: wall seconds, pages, changes, requests, and where the time went.
    `between(pages)` runs after each tick, outside its time."""
    from ingest_pipelines.sync.tick import run_tick

    ticks: list[dict[str, Any]] = []
    for _ in range(max_ticks):
        marks = [meter.mark() for meter in meters]
        ledger_before = ledger.seconds
        with timed() as t:
            outcome = run_tick(workflow, source, ledger, **kwargs)
        requests: dict[str, int] = {}
        spans: list[tuple[float, float]] = []
        for meter, mark in zip(meters, marks, strict=True):
            counts, meter_spans = meter.since(mark)
            requests.update(counts)
            spans += meter_spans
        request_seconds = busy_seconds(spans)
        ledger_seconds = ledger.seconds - ledger_before
        ticks.append(
            {
                "seconds": round(t["seconds"], 3),
                "pages": outcome.pages,
                "messages": outcome.messages,
                "batches": len(outcome.batches),
                "counts": {op: n for op, n in outcome.counts.items() if n},
                "requests": requests,
                "request_seconds": round(request_seconds, 3),
                "ledger_seconds": round(ledger_seconds, 3),
                "other_seconds": round(t["seconds"] - request_seconds - ledger_seconds, 3),
                "cursor": outcome.cursor,
            }
        )
        finished = done(outcome)
        if between is not None:
            between(outcome.pages)
        if finished:
            return ticks
    raise AssertionError(f"not done after {max_ticks} ticks; last tick: {ticks[-1] if ticks else None}")


def summarize(ticks: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = sum(t["seconds"] for t in ticks)
    counts: dict[str, int] = {}
    requests: dict[str, int] = {}
    for tick in ticks:
        for op, n in tick["counts"].items():
            counts[op] = counts.get(op, 0) + n
        for op, n in tick["requests"].items():
            requests[op] = requests.get(op, 0) + n
    return {
        "seconds": round(seconds, 2),
        "ticks": len(ticks),
        "max_tick_seconds": round(max(t["seconds"] for t in ticks), 2),
        "ticks_over_bar": sum(1 for t in ticks if t["seconds"] >= TICK_BAR_SECONDS),
        "tick_seconds": [t["seconds"] for t in ticks],
        "pages": sum(t["pages"] for t in ticks),
        "requests": sum(requests.values()),
        "requests_by_operation": requests,
        "changes": counts,
        # where the time went, summed over the ticks
        "request_seconds": round(sum(t["request_seconds"] for t in ticks), 2),
        "ledger_seconds": round(sum(t["ledger_seconds"] for t in ticks), 2),
        "other_seconds": round(sum(t["other_seconds"] for t in ticks), 2),
    }


class BarePass:
    """A boto3 ListObjectVersions paginator pass over the bucket at the product's page size, taken a few pages at a time
    between the product's ticks: both passes then see the same machine (a background load drifts by the minute)."""

    def __init__(self, client: Any):
        self.pages = iter(client.get_paginator("list_object_versions").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": PAGE_SIZE}))
        self.seconds = 0.0
        self.listed_pages = 0
        self.keys = 0

    def take(self, pages: int) -> None:
        """List `pages` more pages (all the rest when negative)."""
        while pages != 0:
            started = time.perf_counter()
            page = next(self.pages, None)
            self.seconds += time.perf_counter() - started
            if page is None:
                return
            self.listed_pages += 1
            self.keys += sum(1 for version in page.get("Versions", []) if version.get("IsLatest"))
            pages -= 1


def _where(summary: dict[str, Any]) -> str:
    return f"time in requests {summary['request_seconds']}s, ledger {summary['ledger_seconds']}s, the rest {summary['other_seconds']}s"


# ---------------------------------------------------------------------------------------------- the cases


def make_changes(s3: Any, keys: int, offset: int) -> list[str]:
    """5 overwrites of existing keys and 5 new keys, spread over the key space (a listing meets them on different pages)."""
    spots = [(keys * (2 * k + 1)) // 10 + offset for k in range(5)]
    changed = [key_name(spot) for spot in spots] + [f"{key_name(spot + 3)}.new-{offset}" for spot in spots]
    for key in changed:
        s3.put_object(Bucket=BUCKET, Key=key, Body=f"changed {offset}".encode())
    return changed


def bench_bucket(work: Path, keys: int, args: argparse.Namespace, events: bool) -> dict[str, Any]:
    from ingest_pipelines.config import S3StoreConfig
    from ingest_pipelines.storage import open_store
    from ingest_pipelines.sync.changes import bucket_is_versioned
    from ingest_pipelines.sync.config import SyncWorkflow
    from ingest_pipelines.sync.tick import sqs_client

    result: dict[str, Any] = {"keys": keys}
    with PrefilledMoto(keys, work, stock_listing=args.stock_listing) as server:
        result["build_seconds"] = round(server.build_seconds, 1)
        print(
            f"  bucket: {keys} keys, versioned, built in moto's backend in {server.build_seconds:.1f}s (not measured below)"
            + ("; stock moto listing" if args.stock_listing else "; moto's ListObjectVersions indexed (see _install_indexed_listing)"),
            flush=True,
        )
        s3 = server.client("s3")
        config = S3StoreConfig(name="src", bucket=BUCKET, endpoint=server.endpoint_url, region="us-east-1")
        source = open_store(config)
        assert bucket_is_versioned(source), "the bucket must be versioned: CDC then lists with ListObjectVersions"
        meter = RequestMeter(source.client, "s3")
        # the product's defaults (pageSize 1000, 50 pages / 20 s per tick); `interval` tiny so that a pass starts at the next tick
        tuning = {"batchSize": args.batch_size} if args.batch_size else {}
        workflow = SyncWorkflow(name=WORKFLOW, source="src", destinations=["mirror"], **tuning, settleDelay=0, interval=0.001)
        ledger = timed_ledger(f"sqlite:///{work / f'ledger-{keys}.sqlite'}")
        max_ticks = keys // PAGE_SIZE + 20  # every tick lists at least one page

        # -- snapshot, tick by tick until the cursor is in CDC mode
        ticks = run_ticks(workflow, source, ledger, [meter], lambda o: o.cursor.mode == "cdc", max_ticks)
        snap = summarize(ticks)
        assert snap["changes"].get("snapshot") == keys, f"snapshot emitted {snap['changes']} for {keys} keys"
        snap["keys_per_second"] = round(keys / snap["seconds"], 1)
        result["snapshot"] = snap
        print(
            f"  snapshot of {keys} keys: {snap['seconds']}s in {snap['ticks']} tick(s), {snap['keys_per_second']:.0f} keys/s, "
            f"max tick {snap['max_tick_seconds']}s (bar < {TICK_BAR_SECONDS:g}s: {snap['ticks_over_bar']} over), "
            f"{snap['requests']} S3 requests {snap['requests_by_operation']}; {_where(snap)}",
            flush=True,
        )
        print(f"    tick seconds: {snap['tick_seconds']}", flush=True)

        result["cdc"] = bench_cdc(
            server, s3, source, workflow, ledger, meter, keys, ticks[-1]["cursor"].passes, bare=not events or args.million_bare
        )

        if events:
            result["events"] = bench_events(server, s3, config, workflow, ledger, keys, sqs_client)
        result["server_peak_rss_mib"] = round(server.peak_rss_mib() or 0.0, 1)
    return result


def bench_cdc(
    server: PrefilledMoto, s3: Any, source: Any, workflow: Any, ledger: Any, meter: RequestMeter, keys: int, passes: int, bare: bool
) -> dict[str, Any]:
    """10 changes, then ticks until one full CDC pass is complete; with `bare`, a bare listing of the same bucket, interleaved."""
    changed = make_changes(s3, keys, offset=0)
    bare_client = server.client("s3")
    # outside the measured passes: the server re-sorts its name list after new keys, the new client loads its models
    bare_client.list_object_versions(Bucket=BUCKET, MaxKeys=1)
    listing = BarePass(bare_client) if bare else None
    ticks = run_ticks(
        workflow,
        source,
        ledger,
        [meter],
        lambda o: o.cursor.passes > passes,
        keys // PAGE_SIZE + 20,
        between=listing.take if listing else None,
    )
    cdc = summarize(ticks)
    assert cdc["changes"] == {"create": 5, "update": 5}, f"expected 5 creates and 5 updates, found {cdc['changes']} ({changed})"
    print(
        f"  CDC pass over {keys} keys with 10 changes: {cdc['seconds']}s in {cdc['ticks']} tick(s) (max {cdc['max_tick_seconds']}s, "
        f"{cdc['ticks_over_bar']} over {TICK_BAR_SECONDS:g}s), {cdc['pages']} pages, "
        f"{cdc['requests']} S3 requests {cdc['requests_by_operation']}, found {cdc['changes']}; {_where(cdc)}",
        flush=True,
    )
    print(f"    tick seconds: {cdc['tick_seconds']}", flush=True)
    if listing is None:
        return cdc
    listing.take(-1)
    assert listing.keys == keys + 5, f"the bare pass saw {listing.keys} keys, expected {keys + 5}"
    own = cdc["ledger_seconds"] + cdc["other_seconds"]
    cdc["bare_list_object_versions_seconds"] = round(listing.seconds, 2)
    cdc["bare_pages"] = listing.listed_pages
    cdc["ratio_to_bare"] = round(cdc["seconds"] / listing.seconds, 3)
    # the same ratio with our requests costing what the bare ones did: what the product adds, free of the server's noise
    cdc["ratio_to_bare_attributed"] = round((listing.seconds + own) / listing.seconds, 3)
    ratios = print_ratios(
        f"CDC listing pass over {keys} versioned keys, same server, same run",
        "keys/s",
        ("ours: run_tick until the pass is complete", keys / cdc["seconds"]),
        [("bare boto3 list_object_versions paginator", keys / listing.seconds)],
    )
    cdc["rate_ratios"] = {name: round(value, 3) for name, value in ratios.items()}
    print(
        f"  time ours/bare = {cdc['ratio_to_bare']:.2f}x (bare pass {listing.seconds:.2f}s in {listing.listed_pages} pages, "
        f"taken between our ticks; bar <= {RATIO_BAR}x: {'met' if cdc['ratio_to_bare'] <= RATIO_BAR else 'NOT met'}); "
        f"bare + our own {own:.2f}s (ledger and diff) = {cdc['ratio_to_bare_attributed']:.3f}x",
        flush=True,
    )
    return cdc


def bench_events(server: PrefilledMoto, s3: Any, config: Any, workflow: Any, ledger: Any, keys: int, sqs_client: Any) -> dict[str, Any]:
    """Events mode on the same bucket and ledger: the workflow's source switches to `changes: events` (the product reads
    the mode from the source at every tick; the snapshot a CDC cursor stands for serves events mode as it is)."""
    from ingest_pipelines.storage import open_store

    setup = server.client("sqs")
    queue = setup.create_queue(QueueName="scale-events")["QueueUrl"]
    arn = setup.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]},
    )
    events_config = config.model_copy(update={"changes": "events", "queueUrl": queue})
    source = open_store(events_config)
    sqs = sqs_client(events_config)  # the client the tick would make, made here so that its requests are counted
    meters = [RequestMeter(source.client, "s3"), RequestMeter(sqs, "sqs")]
    changed = make_changes(s3, keys, offset=1)
    found: dict[str, int] = {}

    def done(outcome: Any) -> bool:
        for op, n in outcome.counts.items():
            found[op] = found.get(op, 0) + n
        return sum(found.values()) >= len(changed)

    ticks = run_ticks(workflow, source, ledger, meters, done, max_ticks=20, sqs=sqs)
    summary = summarize(ticks)
    assert summary["changes"] == {"create": 5, "update": 5}, f"expected 5 creates and 5 updates, found {summary['changes']}"
    summary["messages"] = sum(t["messages"] for t in ticks)
    print(
        f"  events mode, 10 changes in a {keys}-key bucket: {summary['seconds']}s in {summary['ticks']} tick(s), "
        f"{summary['requests']} S3+SQS requests {summary['requests_by_operation']} for {summary['messages']} message(s), "
        f"found {summary['changes']}; {_where(summary)}",
        flush=True,
    )
    return summary


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def main(argv: list[str]) -> dict[str, Any]:
    # `python -m benchmarks scale` passes no arguments: the environment sets the defaults there
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale", description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=int(os.environ.get("BENCH_SCALE_KEYS", "100000")), help="keys of the default case")
    parser.add_argument(
        "--million", action="store_true", default=_flag("BENCH_SCALE_MILLION") or _flag("BENCH_BIG"), help="also the 1,000,000-key case"
    )
    parser.add_argument("--million-keys", type=int, default=int(os.environ.get("BENCH_SCALE_MILLION_KEYS", "1000000")))
    parser.add_argument(
        "--batch-size", type=int, default=0, help="the workflow's batchSize (changes per committed batch; default: the product's, 8)"
    )
    parser.add_argument("--million-bare", action="store_true", help="the 1,000,000-key case lists bare too (one more full pass)")
    parser.add_argument("--stock-listing", action="store_true", help="keep moto's own ListObjectVersions (O(keys) per page)")
    args = parser.parse_args(argv)
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)
    results: dict[str, Any] = {"batch_size": args.batch_size or "default (8)", "moto_listing": "stock" if args.stock_listing else "indexed"}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        results["default"] = bench_bucket(Path(tmp), args.keys, args, events=False)
        if args.million:
            results["million"] = bench_bucket(Path(tmp), args.million_keys, args, events=True)
    results["peak_rss_mib"] = round(peak_rss_mib(), 1)
    print(f"  peak RSS of this process {results['peak_rss_mib']} MiB", flush=True)
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), indent=2, default=str))
