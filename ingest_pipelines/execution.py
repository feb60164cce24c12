"""The `executor:` mapping of ingest.yaml (top level or per workflow): where a run executes its ops.

Validated when the file loads; `ingest_pipelines.defs.executors` turns it into a Dagster executor.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from ingest_pipelines.config import ConfigError, ConfigModel, IngestConfig, S3StoreConfig, SecretField, WorkflowConfig

#: the folder of the state store under which op outputs are pickled when they cross processes.
IO_PREFIX = "dagster-io"


class ExecutorConfig(ConfigModel):
    """`in_process` (all ops in the run's process), `multiprocess` (a process per op, one host) or
    `celery` (ops as Celery tasks on `dagster-celery` workers, any host, over `broker`)."""

    type: Literal["in_process", "multiprocess", "celery"]
    #: multiprocess: ops running at once inside one run (default: the CPU count).
    maxConcurrent: int | None = Field(default=None, ge=1)
    #: celery: the broker the workers listen on, e.g. redis://redis:6379/0; `$VAR` keeps it out of the UI.
    broker: SecretField = None
    #: celery: where task results go (default: the broker).
    backend: SecretField = None
    #: celery: modules every worker imports before running a task.
    include: list[str] = Field(default_factory=list)
    #: celery: extra Celery settings (lower-case names, e.g. worker_prefetch_multiplier).
    configSource: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fits_type(self) -> ExecutorConfig:
        if self.type == "celery" and self.broker is None:
            raise ValueError("broker is required for type 'celery' (e.g. redis://127.0.0.1:6379/0)")
        if self.type != "celery":
            extra = [key for key in ("broker", "backend", "include", "configSource") if getattr(self, key)]
            if extra:
                raise ValueError(f"{', '.join(extra)} only apply to type 'celery'")
        if self.type != "multiprocess" and self.maxConcurrent is not None:
            raise ValueError("maxConcurrent only applies to type 'multiprocess'")
        return self

    @property
    def crosses_hosts(self) -> bool:
        """Whether another host may run the next op, so op outputs must go through shared storage."""
        return self.type == "celery"


def parse_executor(raw: Any, where: str) -> ExecutorConfig | None:
    """Validate an `executor:` mapping; the error names `where` (file, workflow) and the field."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: field 'executor': expected a mapping such as {{type: celery, broker: ...}}")
    try:
        return ExecutorConfig.model_validate(raw)
    except ValidationError as exc:
        parts = []
        for error in exc.errors():
            field = ".".join(str(part) for part in ("executor", *error["loc"]))
            msg = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            parts.append(f"{where}: field {field!r}: {msg}")
        raise ConfigError("; ".join(parts)) from None


def executor_config(workflow: WorkflowConfig | None, config: IngestConfig | None) -> ExecutorConfig | None:
    """The workflow's own executor, else the top-level one (when `config` is given), else None."""
    where = (config.path if config else None) or "<config>"
    if workflow is not None and workflow.executor is not None:
        return parse_executor(workflow.executor, f"{where}: workflow {workflow.name!r}")
    return parse_executor(config.executor, where) if config is not None else None


def needs_shared_io(config: IngestConfig) -> bool:
    """Whether any job of this config may run consecutive ops on different hosts."""
    candidates = [executor_config(None, config), *(executor_config(w, config) for w in config.workflows)]
    return any(e is not None and e.crosses_hosts for e in candidates)


def check_executors(config: IngestConfig) -> None:
    """A Celery executor needs an S3 state store: op outputs cross hosts through it."""
    if not needs_shared_io(config):
        return
    where = config.path or "<config>"
    state = config.state_store()
    if not isinstance(state, S3StoreConfig):
        raise ConfigError(
            f"{where}: field 'executor': type 'celery' runs ops on other hosts, so op outputs go through the "
            "state store: set top-level `state:` to an s3 store (bucket, prefix) the workers can reach"
        )
    for field in state.secret_fields:
        secret = getattr(state, field)
        if secret is not None and secret.env_var is None:
            raise ConfigError(
                f"{where}: state: field {field!r}: with executor type 'celery' the state store's credentials reach "
                "Dagster's S3 IO manager, so write them as $VAR (an env var), not as a literal"
            )
