"""`IngestWorkflowsComponent`: the workflows of one ingest.yaml, as `dagster dev` builds them, in a dg project.

As dagster-sling's component points at Sling's replication YAML, this one points at ingest.yaml
(resolved against the component's folder) instead of re-describing it in defs.yaml. No
`from __future__ import annotations` here: dg.Resolvable reads the field annotations as types.
"""

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import dagster as dg

from ingest_pipelines.components.scaffolder import IngestWorkflowsScaffolder
from ingest_pipelines.config import ConfigError, IngestConfig, load_config
from ingest_pipelines.defs import build_workflow
from ingest_pipelines.defs.executors import executor_for, io_manager_resources
from ingest_pipelines.defs.resources import build_resources


@functools.lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int) -> tuple[IngestConfig, dict[str, Any], dg.ExecutorDefinition | None]:
    """The config and what every workflow of it shares (resources, the default executor), once per file:
    components that split one ingest.yaml's workflows between them then merge with the same objects
    (Definitions.merge refuses two different resources under one key)."""
    config = load_config(path)
    # what build_definitions puts beside the workflows (a test checks the two agree)
    resources = {**build_resources(config), **io_manager_resources(config)}
    return config, resources, executor_for(None, config)


@dg.scaffold_with(IngestWorkflowsScaffolder)
@dataclass
class IngestWorkflowsComponent(dg.Component, dg.Resolvable):
    """The workflows of an ingest.yaml as Dagster assets, asset checks, sensors and jobs.

    Every kind (sync, inventory, bundle, pennsieve), named as under `dagster dev` (docs/configuration.md,
    "Names in Dagster").

    `dg scaffold defs ingest_pipelines.components.IngestWorkflowsComponent <folder>` writes a defs.yaml and
    a starter ingest.yaml (one filesystem-to-filesystem sync workflow) that load as they are.
    """

    path: Annotated[
        str,
        dg.Resolver.default(
            description="The ingest.yaml to load, relative to this component's folder (or absolute). "
            "Secrets in it stay `$VAR` references (Dagster EnvVars).",
            examples=["ingest.yaml", "../shared/ingest.yaml"],
        ),
    ] = "ingest.yaml"
    workflows: Annotated[
        list[str] | None,
        dg.Resolver.default(
            description="Only these workflows of the file (by their `name:` in ingest.yaml); default all of them. "
            "Several components may split one ingest.yaml's workflows between them.",
            examples=[["photos-mirror"], ["faces", "pacifica"]],
        ),
    ] = None

    @classmethod
    def get_spec(cls) -> dg.ComponentTypeSpec:
        return dg.ComponentTypeSpec(
            description="Workflows of an ingest.yaml: S3/folder sync, S3 Inventory indexing, Pacifica bundles, Pennsieve imports.",
            tags=["ingest", "s3"],
            produces=["asset", "asset_check", "sensor", "job", "resource"],
        )

    def config_path(self, context: dg.ComponentLoadContext) -> Path:
        return (context.path / self.path).resolve()

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        path = self.config_path(context)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (attribute `path` of its defs.yaml)")
        config, resources, executor = _load(str(path), path.stat().st_mtime_ns)
        parts = [dg.Definitions(resources=resources, executor=executor)]
        parts += [build_workflow(workflow, config) for workflow in self.selected(config)]
        return dg.Definitions.merge(*parts)

    def selected(self, config: IngestConfig) -> list[Any]:
        if self.workflows is None:
            return list(config.workflows)
        known = {workflow.name for workflow in config.workflows}
        missing = [name for name in self.workflows if name not in known]
        if missing:
            raise ConfigError(
                f"{config.path}: no workflow named {', '.join(map(repr, missing))} (attribute `workflows`; "
                f"the file has: {', '.join(sorted(known)) or 'none'})"
            )
        return [workflow for workflow in config.workflows if workflow.name in self.workflows]
