"""`type: http`: an HTTP JSON API as a sync source (the plugin shipped with this package; entry point `http`)."""

from ingest_pipelines.plugins.http.config import HttpSourceConfig
from ingest_pipelines.plugins.http.source import HttpSource
from ingest_pipelines.plugins.registry import Plugin

plugin = Plugin(config=HttpSourceConfig, source=HttpSource, summary=HttpSourceConfig.summary)

__all__ = ["HttpSource", "HttpSourceConfig", "plugin"]
