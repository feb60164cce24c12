"""Dagster executors from ingest.yaml's `executor:` (in-process, multiprocess, dagster-celery) and the
S3 IO manager that lets op outputs cross hosts when ops run on Celery workers.

Job builders pass `executor_def=executor_for(workflow, config)`; None keeps Dagster's default.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from ingest_pipelines.config import (
    IO_PREFIX,
    ExecutorConfig,
    IngestConfig,
    S3StoreConfig,
    Secret,
    WorkflowConfig,
    executor_config,
    needs_shared_io,
)

IO_MANAGER_KEY = "io_manager"


def _string_source(secret: Any) -> Any:
    """A `$VAR` secret as Dagster's `{env: VAR}` (resolved in the worker, never shown); else the text."""
    if isinstance(secret, Secret):
        return {"env": secret.env_var} if secret.env_var else secret.reveal()
    return secret


def _executor_name(executor: ExecutorConfig) -> str:
    return f"ingest_{executor.type}"


def build_executor(executor: ExecutorConfig) -> dg.ExecutorDefinition:
    """The Dagster executor for one `executor:` mapping."""
    if executor.type == "in_process":
        return dg.in_process_executor
    if executor.type == "multiprocess":
        if executor.maxConcurrent is None:
            return dg.multiprocess_executor
        return dg.multiprocess_executor.configured({"max_concurrent": executor.maxConcurrent}, name=_executor_name(executor))
    from dagster_celery import celery_executor  # only deployments that use Celery import it

    celery_config: dict[str, Any] = {
        "broker": _string_source(executor.broker),
        "backend": _string_source(executor.backend if executor.backend is not None else executor.broker),
    }
    if executor.include:
        celery_config["include"] = list(executor.include)
    if executor.configSource:
        celery_config["config_source"] = dict(executor.configSource)
    return celery_executor.configured(celery_config, name=_executor_name(executor))


def executor_for(workflow: WorkflowConfig | None, config: IngestConfig | None = None) -> dg.ExecutorDefinition | None:
    """The executor for a workflow's jobs: its own `executor:`, else the top-level one, else None.

    None leaves the job on the code location's default, which build_definitions sets from the
    top-level `executor:` (so `executor_for(workflow)` without config is enough for a job builder
    that is happy with Dagster's default). `workflow=None`: that code-location default itself."""
    executor = executor_config(workflow, config)
    return build_executor(executor) if executor is not None else None


def _env_or_none(secret: Any) -> dg.EnvVar | None:
    return dg.EnvVar(secret.env_var) if isinstance(secret, Secret) and secret.env_var else None


def io_manager_resources(config: IngestConfig) -> dict[str, Any]:
    """`io_manager` on the S3 state store (prefix `<state prefix>dagster-io/`) when some executor runs
    ops on other hosts; empty otherwise (Dagster's filesystem IO manager under DAGSTER_HOME)."""
    if not needs_shared_io(config):
        return {}
    from dagster_aws.s3 import S3PickleIOManager, S3Resource

    state = config.state_store()
    assert isinstance(state, S3StoreConfig)  # check_executors refused anything else at load
    credentials = {
        field: env
        for field, secret in (
            ("aws_access_key_id", state.accessKeyID),
            ("aws_secret_access_key", state.secretAccessKey),
            ("aws_session_token", state.sessionToken),
        )
        if (env := _env_or_none(secret)) is not None
    }
    s3 = S3Resource(endpoint_url=state.endpoint_url(), region_name=state.region or "us-east-1", **credentials)
    return {IO_MANAGER_KEY: S3PickleIOManager(s3_resource=s3, s3_bucket=state.bucket, s3_prefix=f"{state.prefix}{IO_PREFIX}")}
