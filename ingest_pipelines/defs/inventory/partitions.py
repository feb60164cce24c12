"""Daily partitions of an inventory workflow, keyed by the inventory date (the report folder's UTC day).

end_offset=1: today's report (delivered today) already has its partition.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.inventory.config import InventoryWorkflow


def inventory_partitions(workflow: InventoryWorkflow) -> dg.DailyPartitionsDefinition:
    return dg.DailyPartitionsDefinition(start_date=workflow.startDate.isoformat(), end_offset=1, timezone="UTC")
