"""Dagster Components for dg projects: `IngestWorkflowsComponent` points a `defs.yaml` at an ingest.yaml.

This module is the package's `dagster_dg_cli.registry_modules` entry point, so `dg list components` finds it.
"""

from ingest_pipelines.components.workflows import IngestWorkflowsComponent

__all__ = ["IngestWorkflowsComponent"]
