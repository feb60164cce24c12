"""ingest.yaml: pydantic models, the loader ($VAR expansion, Go-style durations) and the registries.

Kinds and store types register themselves here; an error names the file, the item and the field.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATH = "ingest.yaml"
CONFIG_ENV = "INGEST_CONFIG"


class ConfigError(ValueError):
    """A problem with ingest.yaml that the user must fix; the message names file, item and field."""


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """Go's time.ParseDuration ("300s", "5m", "1h30m", "500ms"), in seconds; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: negative")
        return float(value)
    text = str(value).strip()
    if text == "0":
        return 0.0
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise ValueError(f"invalid duration {value!r} (use Go-style units, e.g. 30s, 5m, 1h30m)")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text:
        raise ValueError("invalid duration '' (use Go-style units, e.g. 30s, 5m, 1h30m)")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


# --------------------------------------------------------------------------- secrets and $VAR

_VAR = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))")
_WHOLE_VAR = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


def expand_vars(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand $VAR, ${VAR} and ${VAR:-default}; `$$` is a literal `$`. A missing variable is an error."""
    env = os.environ if environ is None else environ

    def repl(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        name = match.group("braced") or match.group("bare")
        if name in env:
            return env[name]
        if match.group("default") is not None:
            return match.group("default")
        raise KeyError(name)

    return _VAR.sub(repl, text)


class Secret:
    """A credential from ingest.yaml: either `$VAR` (resolved when used, so Dagster can take it as
    an EnvVar) or a literal. Its repr never shows the value."""

    __slots__ = ("env_var", "_literal")

    def __init__(self, env_var: str | None = None, literal: str | None = None):
        self.env_var = env_var
        self._literal = literal

    @classmethod
    def parse(cls, value: Any) -> Secret | None:
        if value is None or isinstance(value, Secret):
            return value
        text = str(value)
        if text == "":
            return None
        whole = _WHOLE_VAR.match(text)
        if whole:
            return cls(env_var=whole.group(1) or whole.group(2))
        return cls(literal=expand_vars(text))

    def reveal(self) -> str | None:
        if self.env_var is not None:
            return os.environ.get(self.env_var)
        return self._literal

    def __repr__(self) -> str:
        return f"Secret(${self.env_var})" if self.env_var else "Secret(****)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self.env_var, self._literal) == (other.env_var, other._literal)

    def __hash__(self) -> int:
        return hash((self.env_var, self._literal))


SecretField = Annotated[Any, BeforeValidator(Secret.parse)]


# --------------------------------------------------------------------------- stores


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True, arbitrary_types_allowed=True)


class StoreConfig(ConfigModel):
    """Common keys of every source and destination (connylabs names)."""

    type: str
    name: str
    prefix: str = ""
    #: as a sync destination: write an empty connylabs marker `{metafilesPrefix}{key}.done` per object.
    metafilesPrefix: str | None = None
    #: as a sync destination: propagate deletes (record destinations default to true).
    deletes: bool = False

    secret_fields: ClassVar[tuple[str, ...]] = ()


class S3StoreConfig(StoreConfig):
    type: Literal["s3"] = "s3"
    bucket: str
    endpoint: str | None = None
    region: str | None = None
    insecure: bool = False
    accessKeyID: SecretField = None
    secretAccessKey: SecretField = None
    sessionToken: SecretField = None
    #: sync source: how changes are found: "list" (ListObjects/ListObjectVersions) or "events" (SQS).
    changes: Literal["list", "events"] = "list"
    queueUrl: str | None = Field(default=None, validate_default=True)

    secret_fields: ClassVar[tuple[str, ...]] = ("accessKeyID", "secretAccessKey", "sessionToken")

    @field_validator("queueUrl")
    @classmethod
    def _queue_for_events(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("changes") == "events" and not value:
            raise ValueError("required with `changes: events` (the SQS queue that receives the bucket's S3 event notifications)")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not value:
            raise ValueError("bucket must not be empty")
        return value

    def endpoint_url(self) -> str | None:
        """connylabs' `endpoint` is a host (optionally with scheme); `insecure` means http."""
        if not self.endpoint:
            return None
        if "://" in self.endpoint:
            return self.endpoint
        return f"{'http' if self.insecure else 'https'}://{self.endpoint}"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"


class FilesystemStoreConfig(StoreConfig):
    type: Literal["filesystem"] = "filesystem"
    path: str

    def uri(self, key: str = "") -> str:
        return Path(self.path, self.prefix + key).resolve().as_uri()


class TypeRegistry(Mapping[str, type[StoreConfig]]):
    """`type:` -> config model for one role, read from the plugin registry (entry points of the group
    `ingest_pipelines.plugins`, see ingest_pipelines.plugins.registry). Looking a name up loads its plugin; a
    plugin that cannot be loaded raises PluginLoadError naming its entry point."""

    def __init__(self, role: Literal["source", "destination", "state"]):
        self.role = role

    @staticmethod
    def _registry() -> Any:
        from ingest_pipelines.plugins.registry import REGISTRY  # it imports this module

        return REGISTRY

    def __getitem__(self, name: str) -> type[StoreConfig]:
        return self._registry().config_model(name, self.role)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry().for_role(self.role))

    def __len__(self) -> int:
        return len(self._registry().for_role(self.role))

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (KeyError, RuntimeError):  # unknown, or a plugin that cannot be loaded
            return False
        return True


#: `type:` -> model, for sources, destinations and the state store: every type is a plugin (built-in ones too).
SOURCE_TYPES = TypeRegistry("source")
DESTINATION_TYPES = TypeRegistry("destination")
STATE_TYPES = TypeRegistry("state")


def _register_in_process(name: str, model: type[StoreConfig], role: str) -> None:
    from ingest_pipelines.plugins.registry import REGISTRY, Plugin, UnknownType

    roles = {role}
    try:
        known = REGISTRY.plugin(name)
        if known.config is model:
            roles |= set(known.store_roles)
    except (UnknownType, RuntimeError):
        pass
    REGISTRY.register(name, Plugin(config=model, store_roles=frozenset(roles)))


def register_source_type(name: str, model: type[StoreConfig]) -> None:
    """Register a type in this process only (tests). Packages register through the entry-point group."""
    _register_in_process(name, model, "source")


def register_destination_type(name: str, model: type[StoreConfig]) -> None:
    """Register a type in this process only (tests). Packages register through the entry-point group."""
    _register_in_process(name, model, "destination")


def secret_field_names(model: type[BaseModel]) -> tuple[str, ...]:
    """A model's `secret_fields` plus every field typed SecretField (kept as written, resolved when used)."""
    names = list(getattr(model, "secret_fields", ()))
    for name, info in model.model_fields.items():
        if name not in names and any(isinstance(m, BeforeValidator) and m.func == Secret.parse for m in info.metadata):
            names.append(name)
    return tuple(names)


# --------------------------------------------------------------------------- workflows


class WorkflowConfig(ConfigModel):
    """Keys every workflow has (connylabs names); each kind subclasses it with its own options."""

    name: str
    kind: str = "sync"
    source: str | None = None
    destinations: list[str] = Field(default_factory=list)
    batchSize: int = Field(default=8, ge=1)
    interval: Duration = 300.0
    cleanUp: bool = False
    webhook: str | None = None
    #: default status of the workflow's sensors in Dagster.
    sensor: Literal["running", "stopped"] = "stopped"
    #: run ops in-process (default) or on dagster-celery workers (`executor: {type: celery, broker: ...}`).
    executor: dict[str, Any] | None = None
    #: reconciliation: a failed or dead attempt (batch, bundle job, inventory date, import) is tried again
    #: after `retryDelay`, doubling per failed attempt up to 30 min, at most `maxAttempts` times (0: forever).
    retryDelay: Duration = 30.0
    maxAttempts: int = Field(default=20, ge=0)
    #: a run the instance has not started (dequeued) this long after it was submitted counts as not launched.
    launchTimeout: Duration = 300.0

    #: whether this kind needs `source` / at least one destination.
    requires_source: ClassVar[bool] = True
    requires_destinations: ClassVar[bool] = True
    #: how many destinations the kind takes at most (None: any).
    max_destinations: ClassVar[int | None] = None

    @field_validator("interval", "retryDelay", "launchTimeout")
    @classmethod
    def _positive_duration(cls, value: float, info: ValidationInfo) -> float:
        if value <= 0:
            raise ValueError(f"{info.field_name} must be positive")
        return value


#: `kind:` -> model.
WORKFLOW_KINDS: dict[str, type[WorkflowConfig]] = {}

#: Modules that register a kind (register_kind) or store types (register_*_type) when imported.
KIND_MODULES = (
    "ingest_pipelines.records",
    "ingest_pipelines.sync.config",
    "ingest_pipelines.inventory.config",
    "ingest_pipelines.bundles.config",
    "ingest_pipelines.pennsieve.config",
)


def register_kind(name: str) -> Callable[[type[WorkflowConfig]], type[WorkflowConfig]]:
    def decorate(model: type[WorkflowConfig]) -> type[WorkflowConfig]:
        WORKFLOW_KINDS[name] = model
        return model

    return decorate


def load_kind_modules() -> None:
    for module in KIND_MODULES:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
            continue
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


# --------------------------------------------------------------------------- executors

# The `executor:` mapping (top level or per workflow): where a run executes its ops. Validated here, with
# the file; ingest_pipelines.defs.executors turns it into a Dagster executor.

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


# --------------------------------------------------------------------------- the whole file


class IngestConfig(ConfigModel):
    sources: list[StoreConfig] = Field(default_factory=list)
    destinations: list[StoreConfig] = Field(default_factory=list)
    workflows: list[WorkflowConfig] = Field(default_factory=list)
    strict: bool = True
    #: where durable sync state (change batches, key index) lives: a store config (s3 or
    #: filesystem); default a folder `.ingest-state` beside ingest.yaml.
    state: StoreConfig | None = None
    #: default executor of every workflow's jobs (the `executor:` mapping above); None: Dagster's default.
    executor: dict[str, Any] | None = None
    #: workflows dropped in non-strict mode, with the reason.
    dropped: list[str] = Field(default_factory=list)
    #: the file this came from (for messages and for resources that re-read it).
    path: str | None = None

    def source(self, name: str) -> StoreConfig:
        for item in self.sources:
            if item.name == name:
                return item
        raise KeyError(f"no source named {name!r}")

    def destination(self, name: str) -> StoreConfig:
        for item in self.destinations:
            if item.name == name:
                return item
        raise KeyError(f"no destination named {name!r}")

    def workflow(self, name: str) -> WorkflowConfig:
        for item in self.workflows:
            if item.name == name:
                return item
        raise KeyError(f"no workflow named {name!r}")

    def workflows_of(self, kind: str, name: str | None = None) -> list[Any]:
        """The workflows of one kind (only the one named, when `name` is given); a ConfigError when none is."""
        workflows = [w for w in self.workflows if w.kind == kind]
        if name:
            workflows = [w for w in workflows if w.name == name]
            if not workflows:
                raise ConfigError(f"{self.path}: no {kind} workflow named {name!r}")
        if not workflows:
            raise ConfigError(f"{self.path}: no workflow of kind {kind!r}")
        return workflows

    def state_store(self) -> StoreConfig:
        if self.state is not None:
            return self.state
        base = Path(self.path).resolve().parent if self.path else Path.cwd()
        return FilesystemStoreConfig(name="state", path=str(base / ".ingest-state"))


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def _validation_message(where: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = _fmt_loc(error["loc"])
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{where}: field {field!r}: {msg}")
    return "; ".join(parts)


def _expand_tree(value: Any, where: str, secret_keys: frozenset[str], key: str | None = None) -> Any:
    """$VAR-expand every string except secrets (kept as written, resolved when used)."""
    if isinstance(value, dict):
        return {k: _expand_tree(v, where, secret_keys, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_tree(v, where, secret_keys, key) for v in value]
    if isinstance(value, str) and key not in secret_keys:
        try:
            return expand_vars(value)
        except KeyError as exc:
            raise ConfigError(f"{where}: field {key!r}: environment variable {exc.args[0]} is not set") from None
    return value


#: keys of an `executor:` mapping kept as written (a `$VAR` broker URL reaches Dagster as an env var).
EXECUTOR_SECRET_KEYS = frozenset({"broker", "backend"})


def _store_model(kind: Any, registry: TypeRegistry, where: str) -> type[StoreConfig]:
    """The model of `type: kind` through the plugin registry; an unknown or broken type names the field."""
    from ingest_pipelines.plugins.registry import REGISTRY, PluginLoadError, UnknownType

    if not isinstance(kind, str) or not kind:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"{where}: field 'type': required (known: {known})")
    try:
        return registry[kind]
    except UnknownType as exc:
        known = ", ".join(sorted(registry))
        broken = REGISTRY.broken()
        also = f"; not loadable: {'; '.join(broken.values())}" if broken else ""
        raise ConfigError(f"{where}: field 'type': {exc} (known: {known}){also}") from None
    except PluginLoadError as exc:
        raise ConfigError(f"{where}: field 'type': {exc}") from None


def _parse_store(raw: Any, section: str, index: int, registry: TypeRegistry, file: str) -> StoreConfig:
    name = raw.get("name") if isinstance(raw, dict) else None
    where = f"{file}: {section}[{index}]" + (f" ({name})" if name else "")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    if not name:
        raise ConfigError(f"{where}: field 'name': required")
    model = _store_model(raw.get("type"), registry, where)
    try:
        return model.model_validate(_expand_tree(raw, where, frozenset(secret_field_names(model))))
    except ValidationError as exc:
        raise ConfigError(_validation_message(where, exc)) from None


def _parse_workflow(raw: Any, index: int, file: str, cfg_sources: set[str], cfg_dests: set[str]) -> WorkflowConfig:
    name = raw.get("name") if isinstance(raw, dict) else None
    where = f"{file}: workflow {name!r}" if name else f"{file}: workflows[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    if not name:
        raise ConfigError(f"{where}: field 'name': required")
    kind = raw.get("kind", "sync")
    if kind not in WORKFLOW_KINDS:
        known = ", ".join(sorted(WORKFLOW_KINDS))
        raise ConfigError(f"{where}: field 'kind': unknown kind {kind!r} (known: {known})")
    model = WORKFLOW_KINDS[kind]
    try:
        secret_keys = frozenset((*getattr(model, "secret_fields", ()), *EXECUTOR_SECRET_KEYS))
        workflow = model.model_validate(_expand_tree(raw, where, secret_keys))
    except ValidationError as exc:
        raise ConfigError(_validation_message(where, exc)) from None
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", workflow.name):
        raise ConfigError(f"{where}: field 'name': use letters, digits, '_', '-', '.' only")
    if model.requires_source:
        if not workflow.source:
            raise ConfigError(f"{where}: field 'source': required for kind {kind!r}")
        if workflow.source not in cfg_sources:
            raise ConfigError(f"{where}: field 'source': no source named {workflow.source!r}")
    if model.requires_destinations and not workflow.destinations:
        raise ConfigError(f"{where}: field 'destinations': at least one destination is required for kind {kind!r}")
    if model.max_destinations is not None and len(workflow.destinations) > model.max_destinations:
        raise ConfigError(f"{where}: field 'destinations': kind {kind!r} takes at most {model.max_destinations}")
    for dest in workflow.destinations:
        if dest not in cfg_dests:
            raise ConfigError(f"{where}: field 'destinations': no destination named {dest!r}")
    if len(set(workflow.destinations)) != len(workflow.destinations):
        raise ConfigError(f"{where}: field 'destinations': a destination is listed twice")
    return workflow


def dagster_name(name: str) -> str:
    """The Dagster-safe form of a workflow/store name: every character outside [A-Za-z0-9_] -> '_'."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def parse_config(data: Any, file: str = "<config>") -> IngestConfig:
    """Validate an already-parsed YAML document."""
    load_kind_modules()
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = set(data) - {"sources", "destinations", "workflows", "strict", "state", "executor"}
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key(s): {', '.join(sorted(unknown))}")
    strict = data.get("strict", True)
    if not isinstance(strict, bool):
        raise ConfigError(f"{file}: field 'strict': expected true or false")

    def section(name: str) -> list[Any]:
        items = data.get(name) or []
        if not isinstance(items, list):
            raise ConfigError(f"{file}: field {name!r}: expected a list")
        return items

    sources = [_parse_store(raw, "sources", i, SOURCE_TYPES, file) for i, raw in enumerate(section("sources"))]
    dests = [_parse_store(raw, "destinations", i, DESTINATION_TYPES, file) for i, raw in enumerate(section("destinations"))]
    for label, items in (("source", sources), ("destination", dests)):
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ConfigError(f"{file}: duplicate {label} name {item.name!r}")
            seen.add(item.name)

    executor = data.get("executor")
    if executor is not None:
        executor = _expand_tree(executor, file, EXECUTOR_SECRET_KEYS)
        parse_executor(executor, file)

    workflows: list[WorkflowConfig] = []
    dropped: list[str] = []
    seen_names: dict[str, str] = {}
    for i, raw in enumerate(section("workflows")):
        try:
            workflow = _parse_workflow(raw, i, file, {s.name for s in sources}, {d.name for d in dests})
            parse_executor(workflow.executor, f"{file}: workflow {workflow.name!r}")
            safe = dagster_name(workflow.name)
            if workflow.name in seen_names:
                raise ConfigError(f"{file}: workflow {workflow.name!r}: duplicate workflow name")
            if safe in seen_names.values():
                raise ConfigError(f"{file}: workflow {workflow.name!r}: name collides with another workflow as Dagster name {safe!r}")
        except ConfigError as exc:
            if strict:
                raise
            log.warning("dropping workflow: %s", exc)
            dropped.append(str(exc))
            continue
        seen_names[workflow.name] = safe
        workflows.append(workflow)

    state = None
    if data.get("state") is not None:
        raw_state = dict(data["state"])
        raw_state.setdefault("name", "state")
        state = _parse_store(raw_state, "state", 0, STATE_TYPES, file)
    config = IngestConfig(
        sources=sources,
        destinations=dests,
        workflows=workflows,
        strict=strict,
        state=state,
        executor=executor,
        dropped=dropped,
        path=None if file.startswith("<") else file,
    )
    check_executors(config)
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> IngestConfig:
    """Read ingest.yaml from `path`, else $INGEST_CONFIG, else ./ingest.yaml. A missing file is an
    empty config only when no path was asked for explicitly."""
    explicit = path is not None or CONFIG_ENV in os.environ
    file = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    if not file.exists():
        if explicit:
            raise ConfigError(f"{file}: config file not found")
        log.warning("no %s found; starting with an empty configuration", file)
        return parse_config({}, str(file.resolve()))
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    return parse_config(data, str(file.resolve()))
