"""The Dagster layer: builds Definitions from an IngestConfig, one sub-package per workflow kind.

Each kind package exposes `build(workflow, config) -> dagster.Definitions`; names derive from the workflow name.
"""

from __future__ import annotations

import importlib

import dagster as dg

from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.executors import executor_for, io_manager_resources
from ingest_pipelines.defs.resources import build_resources

#: workflow `kind:` -> the defs package that builds it.
KIND_DEFS = {
    "sync": "ingest_pipelines.defs.sync",
    "inventory": "ingest_pipelines.defs.inventory",
    "bundle": "ingest_pipelines.defs.bundles",
    "pennsieve": "ingest_pipelines.defs.pennsieve",
}


def build_definitions(config: IngestConfig) -> dg.Definitions:
    # the top-level `executor:` also applies to assets materialized from the UI
    parts = [dg.Definitions(resources={**build_resources(config), **io_manager_resources(config)}, executor=executor_for(None, config))]
    for workflow in config.workflows:
        builder = importlib.import_module(KIND_DEFS[workflow.kind])
        parts.append(builder.build(workflow, config))
    return dg.Definitions.merge(*parts)
