"""The inventory sensor: finds complete reports (manifest.json + manifest.checksum) in the source bucket
and requests a run of the report's date partition; bounded listing per tick, cursor = per-series marks.

Each requested report is followed until a run of it succeeds: a run that died is requested again after
backoff, at most maxAttempts times (`reconcile.SensorRequests`)."""

from __future__ import annotations

import json

import dagster as dg

from ingest_pipelines.config import dagster_name
from ingest_pipelines.defs import reconcile
from ingest_pipelines.defs.inventory.assets import REPORT_TAG
from ingest_pipelines.defs.inventory.checks import CHECK_NAME
from ingest_pipelines.defs.inventory.partitions import inventory_partitions
from ingest_pipelines.defs.reconcile import SensorRequests, TrackedRequest
from ingest_pipelines.defs.resources import store_resource_key
from ingest_pipelines.defs.ticks import min_interval_seconds
from ingest_pipelines.inventory.config import InventoryWorkflow
from ingest_pipelines.inventory.manifest import ListingBudget, find_new_reports
from ingest_pipelines.retries import RetryPolicy

RERUN = "materialize the date's partition (or backfill it) from the asset page; a run that succeeds ends it"


def build_inventory_sensor(workflow: InventoryWorkflow, job: dg.UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    dname = dagster_name(workflow.name)
    source_key = store_resource_key("source", workflow.source or "")
    start = workflow.startDate.isoformat()
    partitions = inventory_partitions(workflow)
    policy = RetryPolicy.of(workflow)
    asset_key = dg.AssetKey([dname, "indexed"])
    job_name = job.name

    def matches(run: dg.DagsterRun, request: TrackedRequest) -> bool:
        """A run of this report's date that imports it: the sensor's run of it, or a run of the whole date."""
        ours = run.job_name == job_name or bool(run.asset_selection and asset_key in run.asset_selection)
        return ours and run.tags.get(REPORT_TAG, request.id) == request.id

    @dg.sensor(
        name=f"{dname}__inventory_sensor",
        job=job,
        minimum_interval_seconds=min_interval_seconds(workflow.interval),
        default_status=dg.DefaultSensorStatus.RUNNING if workflow.sensor == "running" else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={source_key},
        description=f"New S3 Inventory reports for workflow {workflow.name}: one run per report, on its date's partition.",
    )
    def inventory_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        store = getattr(context.resources, source_key).get_store()
        cursor = json.loads(context.cursor) if context.cursor else {}
        budget = ListingBudget(workflow.maxPagesPerTick, workflow.tickSeconds)
        found = find_new_reports(
            store.client,
            store.bucket,
            store.prefix,
            cursor.get("marks", {}),
            budget,
            cursor.get("resume_after"),
            cursor.get("seen", {}),
            # "" (no partition at all yet, startDate ahead) holds every report back
            until=partitions.get_last_partition_key() or "",
        )
        for problem in found.problems:
            context.log.warning(problem)
        now = reconcile.clock()
        requests = SensorRequests.from_cursor(cursor.get("requests"), policy, workflow.launchTimeout)
        run_requests = []
        for ref, checksum in sorted(found.reports, key=lambda item: (item[0].timestamp, item[0].series)):
            if ref.date < start:
                context.log.warning(f"{ref.manifest_key}: inventory date {ref.date} is before startDate {start}; not requested")
                continue
            run_key = f"{ref.manifest_key}:{checksum}"
            run_requests.append(requests.track(ref.manifest_key, ref.date, run_key, {REPORT_TAG: ref.manifest_key}, now))
        # the reports requested before: a run that died is requested again, after backoff
        settled = reconcile.reconcile_requests(context, requests, matches, now, asset_key, CHECK_NAME, RERUN)
        run_requests.extend(settled.run_requests)
        if not found.complete:
            context.log.info(f"listing budget spent after {budget.calls} list calls; resuming after {found.resume_after!r} next tick")
        new_cursor = {
            "marks": found.marks,
            "seen": found.seen,
            "resume_after": None if found.complete else found.resume_after,
            "requests": requests.to_cursor(),
        }
        cursor_text = json.dumps(new_cursor, sort_keys=True)
        if not run_requests:
            reason = "no new reports" + (f"; followed: {settled.summary}" if settled.summary else "")
            return dg.SensorResult(skip_reason=reason, cursor=cursor_text, asset_events=settled.checks)
        return dg.SensorResult(run_requests=run_requests, cursor=cursor_text, asset_events=settled.checks)

    return inventory_sensor
