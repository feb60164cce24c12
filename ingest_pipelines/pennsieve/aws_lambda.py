"""The target as an AWS Lambda function: the seed's event bridged to its environment variables for one call.

The environment is restored afterwards, so a warm container never carries one invocation's params into the next.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from ingest_pipelines.pennsieve.target import run_target

log = logging.getLogger(__name__)

#: event field -> environment variable (the seed's event shape); `params` entries are copied as they are.
EVENT_VARIABLES = {
    "inputDir": "INPUT_DIR",
    "executionRunId": "EXECUTION_RUN_ID",
    "callbackToken": "CALLBACK_TOKEN",
    "datasetId": "DATASET_ID",
    "organizationId": "ORGANIZATION_ID",
    "targetType": "TARGET_TYPE",
}


def event_environment(event: Mapping[str, Any]) -> dict[str, str]:
    """The variables one event sets: its named fields, then every `params` entry."""
    values: dict[str, str] = {}
    for field, variable in EVENT_VARIABLES.items():
        if event.get(field) not in (None, ""):
            values[variable] = str(event[field])
    params = event.get("params") or {}
    if not isinstance(params, Mapping):
        raise ValueError("event field 'params' must be an object")
    for name, value in params.items():
        if value is not None:
            values[str(name)] = str(value)
    return values


@contextlib.contextmanager
def bridged_environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block, then put back exactly what was there before."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def lambda_handler(event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry (`ingest_pipelines.pennsieve.lambda_handler`): {status: success|error, executionRunId}."""
    run_id = event.get("executionRunId") if isinstance(event, Mapping) else None
    try:
        with bridged_environment(event_environment(event)):
            result = run_target(os.environ)
    except Exception as exc:  # the orchestrator reads the status; the reason goes to the function's log
        log.error("pennsieve target failed for run %s: %s", run_id, exc)
        return {"status": "error", "executionRunId": run_id}
    log.info("pennsieve target done for run %s: %s", run_id, result.summary())
    return {"status": "success", "executionRunId": run_id}
