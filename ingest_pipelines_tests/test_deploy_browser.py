"""The UI in a real browser: Debian's headless chromium driven by Playwright opens the webserver started
on the demo config, finds a sync workflow's asset in the catalog, materializes one partition from the
partition dialog and sees the run succeed; screenshots go to the test's folder and test-output/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from ingest_pipelines.demo import DemoContext, build_demo
from ingest_pipelines.testing import free_port
from ingest_pipelines_tests.conftest import REPO_ROOT
from ingest_pipelines_tests.deploy_fixtures import BIN, ProcessGroup, child_env, http_ok, service_unavailable, wait_until

CHROMIUM = Path("/usr/bin/chromium")
#: without these, chromium tries Google's hosts at every start, which this closed network refuses
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ASSET = "demo_sync / snapshot"
PARTITION = "reports/"


def objects(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


@pytest.fixture
def demo(tmp_path: Path, s3_server, s3):
    """The demo's config and sample data on the test's S3 server; sensors stopped so that the only run
    is the one the browser launches."""
    ctx = DemoContext(endpoint_url=s3_server.endpoint_url, s3=s3, workdir=tmp_path / "demo")
    ctx.workdir.mkdir()
    try:
        document = build_demo(ctx)
        assert any(w["name"] == "demo-sync" for w in document["workflows"]), "the sync demo is missing"
        for workflow in document["workflows"]:
            workflow["sensor"] = "stopped"
        config_path = ctx.workdir / "ingest.yaml"
        config_path.write_text(yaml.safe_dump(document, sort_keys=False))
        yield config_path, ctx.env
    finally:
        for server in ctx.servers:
            server.stop()


def test_materialize_a_partition_from_the_ui_in_chromium(tmp_path: Path, demo, s3) -> None:
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
    shots.mkdir()
    try:
        procs.start("webserver", [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(port)], env, cwd=REPO_ROOT)
        procs.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, cwd=REPO_ROOT)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{base}/server_info"), 150, "the webserver", details=procs.logs)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            try:
                # the catalog: search for the workflow, open its snapshot asset
                page.goto(f"{base}/assets", wait_until="domcontentloaded")
                asset_link = page.locator('a[href="/assets/demo_sync/snapshot"]')
                asset_link.first.wait_for()
                # Dagster's first-visit newsletter dialog, shown once per user over the catalog
                skip = page.get_by_role("button", name="Skip")
                try:
                    skip.wait_for(timeout=5000)
                    skip.click()
                except PlaywrightTimeout:
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

                with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:

                    def finished() -> dg.DagsterRun | None:
                        run = instance.get_run_by_id(run_id)
                        return run if run is not None and run.is_finished else None

                    run = wait_until(finished, 150, f"run {run_id} to finish", interval=1.0, details=procs.logs)
                    assert run.status == dg.DagsterRunStatus.SUCCESS, procs.logs()
                    assert run.tags.get("dagster/partition") == PARTITION
                page.get_by_text("Success", exact=True).first.wait_for()
                page.wait_for_timeout(1500)  # let the event log render the materialization
                page.screenshot(path=str(shots / "3-run-succeeded.png"))
            except Exception:
                page.screenshot(path=str(shots / "failure.png"))  # what the browser showed when it failed
                raise
            finally:
                browser.close()

        # the run did the work: the shard's objects are in the mirror bucket
        mirrored = objects(s3, "sync-mirror", "mirror/reports/")
        assert {f"mirror/reports/2024/q{i}.csv" for i in range(1, 5)} <= mirrored
        assert all((shots / name).stat().st_size > 10_000 for name in ("1-catalog.png", "2-partition-dialog.png", "3-run-succeeded.png"))
        keep = REPO_ROOT / "test-output" / "deploy-browser"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(shots, keep)
    finally:
        procs.stop_all()
