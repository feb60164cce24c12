"""Dagster entry point: reads $INGEST_CONFIG (default ./ingest.yaml) and builds `defs`.

`dagster dev -m ingest_pipelines.definitions` or `[tool.dagster] module_name` load this.
"""

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions

defs = build_definitions(load_config())
