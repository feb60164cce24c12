"""The UI in a real browser: Debian's headless chromium driven by Playwright opens the webserver started
on the demo config, finds a sync workflow's asset in the catalog, materializes one partition from the
partition dialog and sees the run succeed. Meanwhile the sync and bundle sensors work as in `make demo`
(the test creates, updates and deletes a source object after the snapshot), and the test then walks the
README's tour over what they did: the catalog, the snapshot shards, a `changes` hour, the sensor's ticks
and skip reasons, the apply run, the checks and the archived bundle, asserting what each page shows.

Screenshots go to the test's folder and test-output/deploy-browser/ (the tour's under tour/);
`INGEST_UPDATE_TOUR=1` (`make tour`) also copies the tour's into docs/tour/, which the README shows."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.scheduler.instigation import InstigatorTick, InstigatorType, TickStatus

from ingest_pipelines.demo import DemoContext, build_demo
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, http_ok, service_unavailable, wait_until

CHROMIUM = Path("/usr/bin/chromium")
#: without these, chromium tries Google's hosts at every start, which this closed network refuses
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ASSET = "demo_sync / snapshot"
PARTITION = "reports/"

#: `make tour` sets it: the tour's screenshots are copied into docs/tour/ (and the tour must show every state it describes)
UPDATE_TOUR = os.environ.get("INGEST_UPDATE_TOUR") == "1"
TOUR_DIR = REPO_ROOT / "docs" / "tour"
#: the workflows whose sensors run, as in `make demo`; the inventory and Pennsieve sensors stay stopped (their
#: runs would only compete for the CPU: their assets still show in the catalog)
RUNNING = {"demo-sync", "pacifica-bundles"}
SYNC_SENSOR = "demo_sync__sync_sensor"
APPLY_JOB = "demo_sync__apply_job"
BUNDLE_JOB = "pacifica_bundles__ingest_job"
SHARDS = ["reports/", "images/", "docs/", "data/", "logs/"]
#: what the test does to the source once the snapshot is committed: change capture's next pass finds them
#: (none in reports/, the shard the browser backfills: a backfill applies what it lists, and the change would find it done)
CREATED, UPDATED, DELETED = "docs/changelog.md", "data/a.json", "logs/app-3.log"
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
#: the sync sensor's skip reasons the tour explains (docs/sync.md)
IDLE = re.compile(r"no changes \((change capture|snapshot).*\)")
APPLYING = re.compile(
    r"run [0-9a-f-]{36} \((QUEUED|NOT_STARTED|STARTING|STARTED)\) (is applying|is queued to apply); \d+ batch\(es\) pending"
)


def objects(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


@pytest.fixture
def demo(tmp_path: Path, s3_server, s3):
    """The demo's config and sample data on the test's S3 server; the sync and bundle sensors run as in
    `make demo`, the others are stopped."""
    ctx = DemoContext(endpoint_url=s3_server.endpoint_url, s3=s3, workdir=tmp_path / "demo")
    ctx.workdir.mkdir()
    try:
        document = build_demo(ctx)
        names = {w["name"] for w in document["workflows"]}
        assert RUNNING <= names, f"the demo lacks {RUNNING - names}"
        for workflow in document["workflows"]:
            if workflow["name"] in RUNNING:
                assert workflow["sensor"] == "running", workflow
            else:
                workflow["sensor"] = "stopped"
        config_path = ctx.workdir / "ingest.yaml"
        config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        yield config_path, ctx.env
    finally:
        for server in ctx.servers:
            server.stop()


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> Sequence[InstigatorTick]:
    """The sensor's ticks, newest first (none before the daemon's first evaluation)."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            return instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=200)
    return []


def runs_of(instance: dg.DagsterInstance, job: str, statuses: list[dg.DagsterRunStatus] | None = None) -> Sequence[dg.DagsterRun]:
    """The job's runs, newest first."""
    return instance.get_runs(dg.RunsFilter(job_name=job, statuses=statuses or []))


def change_the_source(s3: Any) -> None:
    s3.put_object(Bucket="sync-source", Key=CREATED, Body=b"# changes\n- a new object\n", ContentType="text/markdown")
    s3.put_object(Bucket="sync-source", Key=UPDATED, Body=b'{"key": "data/a.json", "version": 2}', ContentType="application/json")
    s3.delete_object(Bucket="sync-source", Key=DELETED)


def sync_converged(instance: dg.DagsterInstance, s3: Any) -> bool:
    """The mirror holds the source's changes, no apply run is pending and the sensor's last tick found nothing to do."""
    mirrored = objects(s3, "sync-mirror", "mirror/")
    if f"mirror/{CREATED}" not in mirrored or f"mirror/{DELETED}" in mirrored:
        return False
    if s3.head_object(Bucket="sync-mirror", Key=f"mirror/{UPDATED}")["ETag"] != s3.head_object(Bucket="sync-source", Key=UPDATED)["ETag"]:
        return False
    if instance.get_runs(dg.RunsFilter(tags={"ingest/serial": "demo_sync"}, statuses=UNFINISHED)):
        return False
    ticks = sensor_ticks(instance, SYNC_SENSOR)
    return bool(ticks) and ticks[0].status == TickStatus.SKIPPED and bool(IDLE.fullmatch(ticks[0].skip_reason or ""))


def hour_totals(instance: dg.DagsterInstance) -> dict[str, dict[str, int]]:
    """Per `changes` hour: creates, updates and deletes summed over its materializations."""
    records = instance.fetch_materializations(dg.AssetKey(["demo_sync", "changes"]), limit=100).records
    totals: dict[str, dict[str, int]] = {}
    for record in records:
        materialization = record.asset_materialization
        assert materialization is not None and materialization.partition
        counts = totals.setdefault(materialization.partition, {"creates": 0, "updates": 0, "deletes": 0})
        for name in counts:
            counts[name] += int(materialization.metadata[name].value)
    return totals


def test_tour_and_materialize_a_partition_from_the_ui_in_chromium(tmp_path: Path, demo, s3) -> None:
    if not CHROMIUM.exists():
        service_unavailable(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    config_path, demo_env = demo
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")  # the laptop instance (SQLite), as `make demo`
    env = child_env(DAGSTER_HOME=str(home), INGEST_CONFIG=str(config_path), **demo_env)
    port = free_port()
    workspace = str(REPO_ROOT / "workspace.yaml")
    procs = ProcessGroup(tmp_path / "logs")
    shots = tmp_path / "screenshots"
    tour = shots / "tour"
    tour.mkdir(parents=True)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            procs.start(
                "webserver", [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, cwd=REPO_ROOT
            )
            procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, cwd=REPO_ROOT)
            base = f"http://127.0.0.1:{port}"
            wait_until(lambda: http_ok(f"{base}/server_info"), 150, "the webserver", details=procs.logs)

            # the sensor's first tick commits the snapshot and requests an apply run; what changes after
            # that is change capture's: a create, an update and a delete in the `changes` hour
            wait_until(lambda: runs_of(instance, APPLY_JOB), 150, "the sync sensor's first apply run", details=procs.logs)
            change_the_source(s3)

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.set_default_timeout(60_000)
                try:
                    run_id = materialize_a_partition(page, base, shots, PlaywrightTimeout)

                    # the sensor's ticks, while the backfill runs: the sync workflow converges first
                    wait_until(
                        lambda: sync_converged(instance, s3),
                        150,
                        "the sync workflow to apply every change",
                        interval=1.0,
                        details=procs.logs,
                    )
                    tour_the_sensor(page, base, tour, instance)

                    def finished() -> dg.DagsterRun | None:
                        run = instance.get_run_by_id(run_id)
                        return run if run is not None and run.is_finished else None

                    run = wait_until(finished, 150, f"run {run_id} to finish", interval=1.0, details=procs.logs)
                    assert run.status == dg.DagsterRunStatus.SUCCESS, procs.logs()
                    assert run.tags.get("dagster/partition") == PARTITION
                    # the sensor's apply run mirrors the shard too: the backfill's own materialization says it ran
                    snapshot = instance.fetch_materializations(dg.AssetKey(["demo_sync", "snapshot"]), limit=100).records
                    assert any(r.run_id == run_id and r.partition_key == PARTITION for r in snapshot), snapshot
                    page.goto(f"{base}/runs/{run_id}", wait_until="domcontentloaded")
                    page.get_by_text("Success", exact=True).first.wait_for()
                    page.get_by_text("RUN_SUCCESS").first.wait_for()  # the event log has rendered to its end
                    page.screenshot(path=str(shots / "3-run-succeeded.png"))

                    # the rest of the tour, once the bundle is archived too
                    bundle_runs = wait_until(
                        lambda: runs_of(instance, BUNDLE_JOB, [dg.DagsterRunStatus.SUCCESS]),
                        150,
                        "the sample bundle's run",
                        details=procs.logs,
                    )
                    walk_the_tour(page, base, tour, instance, bundle_partition=bundle_runs[0].tags["dagster/partition"])
                    shutil.copy(shots / "2-partition-dialog.png", tour / "7-backfill-a-shard.png")
                except Exception:
                    page.screenshot(path=str(shots / "failure.png"))  # what the browser showed when it failed
                    raise
                finally:
                    browser.close()

            # every apply run succeeded; the sensor's skip reasons are the ones docs/sync.md and the README explain
            apply_runs = runs_of(instance, APPLY_JOB)
            assert apply_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in apply_runs), [
                (r.run_id, r.status) for r in apply_runs
            ]
            ticks = sensor_ticks(instance, SYNC_SENSOR)
            assert {r.run_id for r in apply_runs} <= {run_id for tick in ticks for run_id in tick.run_ids}
            reasons = [t.skip_reason or "" for t in ticks if t.status == TickStatus.SKIPPED]
            assert all(IDLE.fullmatch(r) or APPLYING.fullmatch(r) for r in reasons), reasons
            # change capture found top-level.txt (outside every shard) and the test's three changes, each once
            totals = hour_totals(instance)
            summed = {name: sum(c[name] for c in totals.values()) for name in ("creates", "updates", "deletes")}
            assert summed == {"creates": 2, "updates": 1, "deletes": 1}, totals

        # the run did the work: the shard's objects are in the mirror bucket
        mirrored = objects(s3, "sync-mirror", "mirror/reports/")
        assert {f"mirror/reports/2024/q{i}.csv" for i in range(1, 5)} <= mirrored
        assert all((shots / name).stat().st_size > 10_000 for name in ("1-catalog.png", "2-partition-dialog.png", "3-run-succeeded.png"))
        tour_shots = sorted(tour.glob("*.png"))
        assert [p.name[0] for p in tour_shots] == list("12345678"), tour_shots
        assert all(p.stat().st_size > 10_000 for p in tour_shots)
        keep = REPO_ROOT / "test-output" / "deploy-browser"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(shots, keep)
        if UPDATE_TOUR:
            assert all(p.stat().st_size < 250_000 for p in tour_shots), "docs/tour/ keeps each screenshot under 250 KB"
            TOUR_DIR.mkdir(parents=True, exist_ok=True)
            for old in TOUR_DIR.glob("*.png"):
                old.unlink()
            for shot in tour_shots:
                shutil.copy(shot, TOUR_DIR / shot.name)
    finally:
        procs.stop_all()


def materialize_a_partition(page: Any, base: str, shots: Path, timeout_error: type[Exception]) -> str:
    """The catalog's search, the asset, its partition dialog; launches one shard and returns the run id."""
    # the catalog: search for the workflow, open its snapshot asset
    page.goto(f"{base}/assets", wait_until="domcontentloaded")
    asset_link = page.locator('a[href="/assets/demo_sync/snapshot"]')
    asset_link.first.wait_for()
    # Dagster's first-visit newsletter dialog, shown once per user over the catalog
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(timeout=5000)
        skip.click()
    except timeout_error:
        pass
    page.locator(".CodeMirror").first.click()
    page.keyboard.type("demo_sync")
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    page.mouse.click(700, 700)  # close the search suggestions
    wait_until(lambda: "demo_sync" in page.url, 20, "the catalog search to apply")
    page.screenshot(path=str(shots / "1-catalog.png"))
    asset_link.first.click()
    page.wait_for_url("**/assets/demo_sync/snapshot**")

    # Materialize… opens the partition dialog: one shard, one run
    page.locator("button", has_text=re.compile(r"^Materialize")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_role("menuitem").filter(has=page.get_by_text(PARTITION, exact=True)).first.click()
    # close the partition list by clicking the dialog's title, then launch
    dialog.get_by_text("Launch runs to materialize").click()
    page.get_by_placeholder("Filter partitions").wait_for(state="hidden")
    launch = dialog.get_by_role("button", name="Launch 1 run")
    launch.wait_for()
    page.screenshot(path=str(shots / "2-partition-dialog.png"))
    launch.click()

    # the toast links to the run; its page shows the status
    view = page.locator('a[href^="/runs/"]').filter(has_text="View").first
    view.wait_for()
    run_id = (view.get_attribute("href") or "").rsplit("/", 1)[-1]
    assert re.fullmatch(r"[0-9a-f-]{36}", run_id), run_id
    view.click()
    page.wait_for_url(f"**/runs/{run_id}**")
    return run_id


def shows(page: Any, *texts: str, timeout: float = 20) -> str:
    """Wait until the page's text holds every one of `texts` (pages render in parts); that text."""

    def text() -> str:
        body = page.inner_text("body")
        return body if all(t in body for t in texts) else ""

    def missing() -> str:
        body = page.inner_text("body")
        return f"missing {[t for t in texts if t not in body]} on {page.url}"

    return wait_until(text, timeout, f"the page to show {texts}", details=missing)


def tour_the_sensor(page: Any, base: str, tour: Path, instance: dg.DagsterInstance) -> None:
    """Step 4 of the tour, taken as soon as the sync workflow has converged: the newest ticks are the ones the
    README describes (the run request, the ticks while it applied, the first idle one)."""
    # the sensor: its ticks; hovering a skipped tick shows why it requested nothing
    page.goto(f"{base}/locations/ingest_pipelines/sensors/{SYNC_SENSOR}", wait_until="domcontentloaded")
    rows = page.locator("tr").filter(has_text="View logs")
    rows.first.wait_for()
    page.get_by_text("Latest tick").first.wait_for()
    shows(page, SYNC_SENSOR, APPLY_JOB, "demo_sync__snapshot_job", "demo_sync__changes_job", "Running")
    assert page.get_by_text("1 run requested").count(), "no tick requested a run"
    reasons = [t.skip_reason or "" for t in sensor_ticks(instance, SYNC_SENSOR) if t.status == TickStatus.SKIPPED]
    wanted = APPLYING if any(APPLYING.fullmatch(r) for r in reasons) else IDLE
    if UPDATE_TOUR:
        assert wanted is APPLYING, f"no tick saw an apply run at work, which the tour shows: {reasons}"
    found, seen = hover_tick(page, rows, wanted)
    assert found, f"no tick in the table says {wanted.pattern}: {seen}"
    page.screenshot(path=str(tour / "4-sync-sensor.png"))
    page.keyboard.press("Escape")


def walk_the_tour(page: Any, base: str, tour: Path, instance: dg.DagsterInstance, bundle_partition: str) -> None:
    """The README's tour but its step 4: each page is asserted, then photographed into `tour` (named by the tour's step)."""
    # 1. the catalog: one group per workflow, every kind's asset, partition counts
    page.goto(f"{base}/assets", wait_until="domcontentloaded")
    page.get_by_text("5 partitions").first.wait_for()  # the snapshot's shards, once the statuses have loaded
    shows(
        page, "demo_sync / snapshot", "demo_sync / changes", "faces_index / indexed", "pacifica_bundles / bundle", "pennsieve_umap / import"
    )
    for group in ("demo_sync", "faces_index", "pennsieve_umap"):
        assert page.locator(f"a[href*='group%3A\"{group}\"']").count(), f"no link to the asset group {group}"
    page.screenshot(path=str(tour / "1-catalog.png"))

    # 2. the snapshot: one partition per shard, all materialized by the sensor's apply run; a shard's counts
    page.goto(f"{base}/assets/demo_sync/snapshot?view=partitions&partition=images%2F", wait_until="domcontentloaded")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("Materialized (5)").wait_for()
    page.get_by_text("batch_id", exact=True).wait_for()
    shows(page, *SHARDS, "objects", "copied", "already_present", "lag_seconds", APPLY_JOB)
    page.screenshot(path=str(tour / "2-snapshot-shards.png"))

    # 3. the changes: the hour with the most of them, the test's create, update and delete (an hour's end may split them)
    totals = hour_totals(instance)
    hour = max(sorted(totals), key=lambda h: sum(totals[h].values()))
    page.goto(f"{base}/assets/demo_sync/changes?view=partitions&partition={hour.replace(':', '%3A')}", wait_until="domcontentloaded")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("position_from", exact=True).wait_for()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d\d:00", hour), hour
    shows(page, hour, "creates", "updates", "deletes", APPLY_JOB)
    page.screenshot(path=str(tour / "3-changes-hour.png"))

    # 5. the apply run: one materialization per partition it touched, then the checks it evaluated
    first_apply = runs_of(instance, APPLY_JOB)[-1]
    page.goto(f"{base}/runs/{first_apply.run_id}", wait_until="domcontentloaded")
    page.get_by_text("RUN_SUCCESS").first.wait_for()
    page.locator("button").filter(has=page.locator('[aria-label="expand_arrows"]')).last.click()  # the event log, full height
    page.get_by_text(re.compile(r"\d+ batch\(es\) applied in \d+ partition\(s\)")).first.wait_for()
    shows(page, APPLY_JOB, SYNC_SENSOR, "destination_matches_batch", "no_duplicate_records", "ASSET_CHECK_EVA", "RUN_SUCCESS")
    page.screenshot(path=str(tour / "5-apply-run.png"))

    # 6. the checks: batches_applied, evaluated by the sensor (the apply run evaluates the other two)
    page.goto(f"{base}/assets/demo_sync/snapshot?view=checks", wait_until="domcontentloaded")
    page.get_by_text("Execution history").first.wait_for()
    shows(page, "Checks (3)", "batches_applied", "destination_matches_batch", "no_duplicate_records")
    page.get_by_text("Execution history").first.click()
    page.get_by_text(re.compile(r"batch\(es\) pending, oldest .* \(maxLag 15 min\)")).first.wait_for()
    assert page.get_by_text("Passed", exact=True).count()
    page.screenshot(path=str(tour / "6-batches-applied.png"))

    # 8. (7 is the partition dialog) another kind: the bundle the drop sensor found, archived as partition = job id
    page.goto(f"{base}/assets/pacifica_bundles/bundle?view=partitions&partition={bundle_partition}", wait_until="domcontentloaded")
    page.get_by_text("Latest materialization").first.wait_for()
    page.get_by_text("task_percent", exact=True).wait_for()
    shows(page, BUNDLE_JOB, "job_id", "OK", "ingest metadata", "s3://bundle-archive/archive/", "s3://bundle-drop/incoming/sample.tar")
    page.screenshot(path=str(tour / "8-bundle.png"))


def hover_tick(page: Any, rows: Any, reason: re.Pattern[str], most: int = 20) -> tuple[str | None, list[str]]:
    """Hover the status of the skipped ticks in the table, newest first, until one's tooltip (its skip reason)
    matches `reason`: that text, and the reasons seen."""
    from playwright.sync_api import expect

    seen: list[str] = []
    count = rows.count()
    for index in range(min(count, most)):
        status = rows.nth(index).locator("td").nth(1)
        if status.inner_text().strip() != "0 runs requested":  # a tick that requested a run has no skip reason
            continue
        # the row and the one below it (often the tick that requested the run) in view, scrolled up only as far as
        # needed, so that the page keeps as much of its top as it can
        below = rows.nth(min(index + 1, count - 1))
        below.evaluate("el => el.getBoundingClientRect().bottom > window.innerHeight && el.scrollIntoView({block: 'end'})")
        trigger = status.locator("[data-state]").first
        trigger.hover()
        expect(trigger).not_to_have_attribute("data-state", "closed")
        text = page.locator(f'[role="tooltip"][id="{trigger.get_attribute("aria-describedby")}"]').inner_text().strip()
        seen.append(text)
        if reason.fullmatch(text):
            expect(page.locator("[data-radix-popper-content-wrapper]")).to_have_count(1)  # the tooltips hovered before have faded
            return text, seen
    return None, seen
