"""Sources and destinations from any API (connylabs' plugin model): the protocols a plugin implements, the
`Plugin` an entry point of the group `ingest_pipelines.plugins` names, and the shipped `http` source.

A minimal plugin: docs/plugins.md; an installable example: examples/ingest-plugin-sqlite/.
"""

from ingest_pipelines.config import SecretField
from ingest_pipelines.plugins.protocols import (
    Destination,
    Download,
    Element,
    ElementChanged,
    ElementNotFound,
    ElementPage,
    PluginConfig,
    PluginError,
    Source,
)
from ingest_pipelines.plugins.registry import ENTRY_POINT_GROUP, REGISTRY, Plugin, PluginLoadError, UnknownType

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Destination",
    "Download",
    "Element",
    "ElementChanged",
    "ElementNotFound",
    "ElementPage",
    "Plugin",
    "PluginConfig",
    "PluginError",
    "PluginLoadError",
    "SecretField",
    "Source",
    "UnknownType",
]
