"""The `executor:` option (top level and per workflow): validation at load, and the Dagster executor
and S3 IO manager it becomes."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest

from ingest_pipelines.config import ConfigError, load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.defs.executors import IO_MANAGER_KEY, executor_for, io_manager_resources

BROKER = "redis://127.0.0.1:6379/13"
S3_STATE = {
    "type": "s3",
    "endpoint": "http://127.0.0.1:9000",
    "bucket": "ingest-state",
    "prefix": "state/",
    "accessKeyID": "$AWS_ACCESS_KEY_ID",
    "secretAccessKey": "$AWS_SECRET_ACCESS_KEY",
}


def document(workflow_executor: Any = None, top_executor: Any = None, state: Any = S3_STATE) -> dict[str, Any]:
    src = {"name": "src", "type": "filesystem", "path": "/tmp/src"}
    dst = {"name": "dst", "type": "filesystem", "path": "/tmp/dst"}
    workflow: dict[str, Any] = {"name": "a-b", "source": "src", "destinations": ["dst"]}
    if workflow_executor is not None:
        workflow["executor"] = workflow_executor
    doc: dict[str, Any] = {"sources": [src], "destinations": [dst], "workflows": [workflow, {**workflow, "name": "plain"}]}
    doc["workflows"][1].pop("executor", None)
    if top_executor is not None:
        doc["executor"] = top_executor
    if state is not None:
        doc["state"] = state
    return doc


def celery_config(executor: dg.ExecutorDefinition) -> dict[str, Any]:
    """The config a `configured` executor hands to the executor it wraps."""
    return executor.config_schema._config_fn(None)  # type: ignore[attr-defined]


def test_default_is_in_process(write_config) -> None:
    config = load_config(write_config(document(state=None)))
    assert executor_for(config.workflows[0], config) is None
    assert executor_for(None, config) is None
    assert io_manager_resources(config) == {}
    # the code location's default (UI materializations, jobs without an executor of their own)
    defs = build_definitions(config)
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"


def test_workflow_celery_executor_with_env_broker(write_config, monkeypatch) -> None:
    monkeypatch.setenv("CELERY_BROKER", BROKER)
    config = load_config(write_config(document({"type": "celery", "broker": "$CELERY_BROKER", "include": ["my.module"]})))
    executor = executor_for(config.workflow("a-b"), config)
    assert executor is not None and executor.name == "ingest_celery"
    # the broker reaches Dagster as an env var reference, never as its value
    assert celery_config(executor) == {"broker": {"env": "CELERY_BROKER"}, "backend": {"env": "CELERY_BROKER"}, "include": ["my.module"]}
    assert executor_for(config.workflow("plain"), config) is None


def test_top_level_executor_applies_to_every_workflow_and_a_workflow_overrides_it(write_config) -> None:
    top = {"type": "celery", "broker": BROKER, "backend": "redis://127.0.0.1:6379/14", "configSource": {"worker_prefetch_multiplier": 1}}
    config = load_config(write_config(document({"type": "multiprocess", "maxConcurrent": 3}, top_executor=top)))
    plain = executor_for(config.workflow("plain"), config)
    assert plain is not None and plain.name == "ingest_celery"
    assert celery_config(plain) == {
        "broker": BROKER,
        "backend": "redis://127.0.0.1:6379/14",
        "config_source": {"worker_prefetch_multiplier": 1},
    }
    own = executor_for(config.workflow("a-b"), config)
    assert own is not None and own.name == "ingest_multiprocess" and celery_config(own) == {"max_concurrent": 3}
    in_process = load_config(write_config(document({"type": "in_process"})))
    assert executor_for(in_process.workflow("a-b"), in_process) is dg.in_process_executor


def test_celery_puts_op_outputs_in_the_s3_state_store(write_config) -> None:
    config = load_config(write_config(document(top_executor={"type": "celery", "broker": BROKER})))
    resources = io_manager_resources(config)
    manager = resources[IO_MANAGER_KEY]
    from dagster_aws.s3 import S3PickleIOManager

    assert isinstance(manager, S3PickleIOManager)
    assert (manager.s3_bucket, manager.s3_prefix) == ("ingest-state", "state/dagster-io")
    assert manager.s3_resource.endpoint_url == "http://127.0.0.1:9000"
    # credentials as env var names: the resource config shown in the UI holds no secret
    assert isinstance(manager.s3_resource.aws_access_key_id, dg.EnvVar)
    defs = build_definitions(config.model_copy(update={"workflows": []}))
    assert IO_MANAGER_KEY in defs.resources and defs.executor is not None and defs.executor.name == "ingest_celery"


@pytest.mark.parametrize(
    ("workflow_executor", "top", "state", "message"),
    [
        ({"type": "celery"}, None, S3_STATE, "field 'executor': Value error, broker is required for type 'celery'"),
        ({"type": "in_process", "broker": BROKER}, None, S3_STATE, "broker only apply to type 'celery'"),
        ({"type": "celery", "broker": BROKER, "maxConcurrent": 2}, None, S3_STATE, "maxConcurrent only applies to type 'multiprocess'"),
        ({"type": "threads"}, None, S3_STATE, "field 'executor.type'"),
        ({"type": "celery", "broker": BROKER, "brokr": "x"}, None, S3_STATE, "field 'executor.brokr': unknown key"),
        ("celery", None, S3_STATE, "field 'executor'"),
        (None, {"type": "celery"}, S3_STATE, "broker is required"),
        (None, {"type": "celery", "broker": BROKER}, None, "set top-level `state:` to an s3 store"),
        (None, {"type": "celery", "broker": BROKER}, {**S3_STATE, "accessKeyID": "AKIALITERAL"}, "write them as $VAR"),
    ],
)
def test_bad_executor_is_an_error_naming_file_workflow_and_field(write_config, workflow_executor, top, state, message) -> None:
    path = write_config(document(workflow_executor, top_executor=top, state=state))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert str(path.resolve()) in text and message in text
    if workflow_executor is not None and top is None and state is S3_STATE:
        assert "workflow 'a-b'" in text


def test_non_strict_drops_only_the_workflow_with_a_bad_executor(write_config) -> None:
    doc = document({"type": "celery"})
    doc["strict"] = False
    config = load_config(write_config(doc))
    assert [w.name for w in config.workflows] == ["plain"]
    assert "broker is required" in config.dropped[0]


def test_each_kinds_job_takes_the_workflow_executor_else_the_code_location_default(write_config, tmp_path) -> None:
    store = {"type": "s3", "endpoint": "http://127.0.0.1:9", "bucket": "drop", "accessKeyID": "$AWS_ACCESS_KEY_ID"}
    doc = {
        "sources": [{"name": "drop", **store}],
        "destinations": [{"name": "archive", **store, "bucket": "archive"}],
        "workflows": [
            {
                "name": "bundles",
                "kind": "bundle",
                "source": "drop",
                "destinations": ["archive"],
                "jobs": f"sqlite:///{tmp_path}/jobs.db",
                "executor": {"type": "multiprocess", "maxConcurrent": 2},
            },
            {
                "name": "imports",
                "kind": "pennsieve",
                "source": "drop",
                "apiHost": "http://127.0.0.1:9",
                "datasetId": "N:dataset:1",
                "packageId": "N:package:1",
                "executionRunId": "run-1",
                "callbackToken": "$PENNSIEVE_TOKEN",
            },
            {
                "name": "faces",
                "kind": "inventory",
                "source": "drop",
                "gateway": {"url": "http://127.0.0.1:9"},
                "history": f"sqlite:///{tmp_path}/history.db",
                "executor": {"type": "in_process"},
            },
        ],
        "state": S3_STATE,
        "executor": {"type": "celery", "broker": BROKER},
    }
    defs = build_definitions(load_config(write_config(doc)))
    assert defs.resolve_job_def("bundles__ingest_job").executor_def.name == "ingest_multiprocess"
    assert defs.resolve_job_def("imports__import_job").executor_def.name == "ingest_celery"
    assert defs.resolve_job_def("faces__index_job").executor_def is dg.in_process_executor
