"""The Dagster layer: builds Definitions from an IngestConfig, one sub-package per workflow kind.

Each kind package exposes `build(workflow, config) -> dagster.Definitions`; names derive from the workflow name.
"""

from __future__ import annotations

import importlib
import warnings

import dagster as dg

from ingest_pipelines.config import IngestConfig, S3StoreConfig, WorkflowConfig
from ingest_pipelines.defs.executors import executor_for, io_manager_resources
from ingest_pipelines.defs.resources import build_resources

#: workflow `kind:` -> the defs package that builds it.
KIND_DEFS = {
    "sync": "ingest_pipelines.defs.sync",
    "inventory": "ingest_pipelines.defs.inventory",
    "bundle": "ingest_pipelines.defs.bundles",
    "pennsieve": "ingest_pipelines.defs.pennsieve",
}


#: Dagster 1.13 warns (PreviewWarning) on every asset check with a `partitions_def`. The inventory (per date),
#: bundle (per job id) and pennsieve (per import) checks are partitioned on purpose: their result is per partition.
#: Ignored while a kind builds its definitions, for this message only; any other preview use still warns.
PARTITIONED_CHECK_PREVIEW = "Specifying a partitions_def on an AssetCheckSpec"


def build_workflow(workflow: WorkflowConfig, config: IngestConfig) -> dg.Definitions:
    """One workflow's assets, checks, sensors and jobs (the shared resources come from build_definitions)."""
    builder = importlib.import_module(KIND_DEFS[workflow.kind])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PARTITIONED_CHECK_PREVIEW, category=dg.PreviewWarning)
        return builder.build(workflow, config)


#: Dagster 1.13 builds sensor definitions with a beta `owners` parameter internally (None here) and warns on
#: every sensor tick of the code server; we never set owners, so the warning says nothing to our users.
warnings.filterwarnings("ignore", message=r"Parameter `owners` of initializer `SensorDefinition.__init__`", category=dg.BetaWarning)


def build_definitions(config: IngestConfig) -> dg.Definitions:
    if any(isinstance(store, S3StoreConfig) for store in [*config.sources, *config.destinations, config.state]):
        from ingest_pipelines.storage.s3 import preload_models

        preload_models()  # in the background: the first tick's client is then ready
    # the top-level `executor:` also applies to assets materialized from the UI; without one, in-process:
    # every asset here is one step, and Dagster's multiprocess default starts a second process for it
    executor = executor_for(None, config) or dg.in_process_executor
    parts = [dg.Definitions(resources={**build_resources(config), **io_manager_resources(config)}, executor=executor)]
    parts += [build_workflow(workflow, config) for workflow in config.workflows]
    return dg.Definitions.merge(*parts)
