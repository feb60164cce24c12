"""Dynamic partitions of a bundle workflow: one per bundle, keyed by the Pacifica job id."""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.bundles.config import BundleWorkflow
from ingest_pipelines.config import dagster_name


def partitions_name(workflow: BundleWorkflow) -> str:
    return f"{dagster_name(workflow.name)}__bundles"


def bundle_partitions(workflow: BundleWorkflow) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=partitions_name(workflow))
