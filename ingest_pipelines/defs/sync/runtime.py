"""The stores, ledger and appliers of one sync workflow inside a run or a sensor tick (from Dagster resources)."""

from __future__ import annotations

from typing import Any

from ingest_pipelines.config import IngestConfig
from ingest_pipelines.defs.resources import STATE_RESOURCE_KEY, store_resource_key
from ingest_pipelines.sync.apply import BatchApplier
from ingest_pipelines.sync.apply_pending import PendingApplier
from ingest_pipelines.sync.batches import BatchStore
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.destinations import Destination
from ingest_pipelines.sync.ledger import SyncLedger, default_ledger_url


def ledger_url(workflow: SyncWorkflow, config: IngestConfig) -> str:
    return workflow.ledger or default_ledger_url(config)


def resource_keys(workflow: SyncWorkflow) -> set[str]:
    keys = {store_resource_key("source", workflow.source or ""), STATE_RESOURCE_KEY}
    keys.update(store_resource_key("destination", name) for name in workflow.destinations)
    return keys


class SyncRuntime:
    """Opened lazily: a sensor tick needs the source, state and ledger; a run also the destinations."""

    def __init__(self, workflow: SyncWorkflow, config: IngestConfig, resources: Any):
        pool = workflow.threads + 8
        self.workflow = workflow
        self.source = getattr(resources, store_resource_key("source", workflow.source or "")).get_store(max_pool_connections=pool)
        self.state = getattr(resources, STATE_RESOURCE_KEY).get_state()
        self.ledger = SyncLedger(ledger_url(workflow, config))
        self.batch_store = BatchStore(self.ledger, workflow.name, self.state)
        self._resources = resources
        self._destinations: list[Destination] | None = None

    @property
    def destinations(self) -> list[Destination]:
        if self._destinations is None:
            pool = self.workflow.threads + 8
            out = []
            for name in self.workflow.destinations:
                resource = getattr(self._resources, store_resource_key("destination", name))
                out.append(Destination(name, resource.store_config(), resource.get_store(max_pool_connections=pool)))
            self._destinations = out
        return self._destinations

    def applier(self) -> BatchApplier:
        return BatchApplier(self.workflow, self.source, self.destinations, self.ledger)

    def pending_applier(self, progress: Any = None) -> PendingApplier:
        return PendingApplier(self.workflow, self.source, self.applier(), self.ledger, self.batch_store, progress=progress)
