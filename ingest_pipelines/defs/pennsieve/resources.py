"""The Pennsieve API as a Dagster resource: host, execution run and the callback token as an EnvVar.

A token written literally in ingest.yaml is read in-process from the file, never passed through Dagster config.
"""

from __future__ import annotations

import dagster as dg

from ingest_pipelines.config import IngestConfig, Secret, dagster_name
from ingest_pipelines.defs.resources import config_at
from ingest_pipelines.pennsieve.client import PennsieveClient, RetryPolicy
from ingest_pipelines.pennsieve.config import PennsieveWorkflow


def api_resource_key(workflow: PennsieveWorkflow) -> str:
    return f"pennsieve_{dagster_name(workflow.name)}"


class PennsieveApiResource(dg.ConfigurableResource):
    """Builds a PennsieveClient for one workflow's execution run."""

    config_path: str | None = None
    workflow: str
    api_host: str
    execution_run_id: str
    #: set from EnvVar when ingest.yaml writes the token as $VAR.
    callback_token: str | None = None

    def _token(self) -> str:
        if self.callback_token:
            return self.callback_token
        workflow = config_at(self.config_path).workflow(self.workflow)
        token = workflow.callbackToken.reveal() if isinstance(workflow.callbackToken, Secret) else None
        if not token:
            name = workflow.callbackToken.env_var if isinstance(workflow.callbackToken, Secret) else None
            raise dg.Failure(
                f"workflow {self.workflow!r}: the callback token is not set" + (f" (environment variable {name})" if name else "")
            )
        return token

    def get_client(self, retry: RetryPolicy | None = None) -> PennsieveClient:
        return PennsieveClient(self.api_host, self.execution_run_id, self._token(), retry=retry)


def api_resource(workflow: PennsieveWorkflow, config: IngestConfig) -> PennsieveApiResource:
    token = workflow.callbackToken
    fields: dict[str, object] = {
        "config_path": config.path,
        "workflow": workflow.name,
        "api_host": workflow.apiHost,
        "execution_run_id": workflow.executionRunId,
    }
    if isinstance(token, Secret) and token.env_var:
        fields["callback_token"] = dg.EnvVar(token.env_var)
    return PennsieveApiResource(**fields)
