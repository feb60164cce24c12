"""ingest.yaml loading: defaults, $VAR expansion, secrets, durations and every error case."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ingest_pipelines.config import ConfigError, Secret, expand_vars, load_config, parse_duration

S3_SOURCE = {
    "name": "src",
    "type": "s3",
    "endpoint": "localhost:9000",
    "insecure": True,
    "bucket": "source",
    "prefix": "prefix/",
    "accessKeyID": "$SRC_KEY",
    "secretAccessKey": "${SRC_SECRET}",
}
S3_DEST = {
    "name": "dst",
    "type": "s3",
    "endpoint": "https://s3.example",
    "bucket": "destination",
    "prefix": "prefix1/",
    "metafilesPrefix": "meta/",
    "accessKeyID": "key",
    "secretAccessKey": "secret",
}


def doc(**workflow: object) -> dict:
    return {
        "sources": [S3_SOURCE],
        "destinations": [S3_DEST],
        "workflows": [{"name": "foo_1-bar_1", "source": "src", "destinations": ["dst"], **workflow}],
    }


def test_connylabs_example_loads_with_defaults(write_config) -> None:
    config = load_config(write_config(doc()))
    workflow = config.workflow("foo_1-bar_1")
    assert workflow.kind == "sync"
    assert workflow.batchSize == 8
    assert workflow.interval == 300.0
    assert workflow.sensor == "stopped"
    assert not workflow.cleanUp
    src = config.source("src")
    assert src.endpoint_url() == "http://localhost:9000"
    assert config.destination("dst").endpoint_url() == "https://s3.example"


def test_interval_and_batch_size(write_config) -> None:
    workflow = load_config(write_config(doc(interval="1h30m", batchSize=1, cleanUp=True, webhook="http://localhost:8080"))).workflows[0]
    assert workflow.interval == 5400.0
    assert workflow.batchSize == 1
    assert workflow.cleanUp
    assert workflow.webhook == "http://localhost:8080"


@pytest.mark.parametrize(
    ("text", "seconds"), [("300s", 300), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("1.5h", 5400), ("0", 0), (30, 30)]
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 minutes", "5", "m", "", "-5s", "5d"])
def test_bad_duration_strings(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_bad_duration_names_file_workflow_and_field(write_config) -> None:
    path = write_config(doc(interval="5 minutes"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "foo_1-bar_1" in message and "'interval'" in message and "invalid duration" in message


def test_var_expansion(monkeypatch, write_config) -> None:
    monkeypatch.setenv("BUCKET", "from-env")
    monkeypatch.delenv("MISSING", raising=False)
    assert expand_vars("a-$BUCKET-${BUCKET}-$$-${MISSING:-dflt}") == "a-from-env-from-env-$-dflt"
    source = {**S3_SOURCE, "bucket": "${BUCKET}"}
    config = load_config(write_config({"sources": [source]}))
    assert config.source("src").bucket == "from-env"


def test_missing_variable_is_an_error(monkeypatch, write_config) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(ConfigError, match="sources\\[0\\] \\(src\\): field 'bucket': environment variable NOPE is not set"):
        load_config(write_config({"sources": [{**S3_SOURCE, "bucket": "$NOPE"}]}))


def test_secrets_are_env_references_and_never_printed(monkeypatch, write_config) -> None:
    monkeypatch.setenv("SRC_KEY", "AKIAREALKEY")
    monkeypatch.setenv("SRC_SECRET", "very-secret")
    config = load_config(write_config(doc()))
    src = config.source("src")
    assert src.accessKeyID == Secret(env_var="SRC_KEY")
    assert src.secretAccessKey.reveal() == "very-secret"
    assert "very-secret" not in repr(config) and "AKIAREALKEY" not in repr(config)
    literal = config.destination("dst").secretAccessKey
    assert literal.reveal() == "secret" and "secret" not in repr(literal).replace("Secret", "")


def test_duplicate_workflow_name(write_config) -> None:
    document = doc()
    document["workflows"].append(dict(document["workflows"][0]))
    with pytest.raises(ConfigError, match="workflow 'foo_1-bar_1': duplicate workflow name"):
        load_config(write_config(document))


def test_duplicate_source_name(write_config) -> None:
    document = doc()
    document["sources"].append(dict(S3_SOURCE))
    with pytest.raises(ConfigError, match="duplicate source name 'src'"):
        load_config(write_config(document))


def test_names_that_collide_in_dagster(write_config) -> None:
    document = doc()
    document["workflows"].append({**document["workflows"][0], "name": "foo_1_bar_1"})
    with pytest.raises(ConfigError, match="collides"):
        load_config(write_config(document))


def test_missing_source(write_config) -> None:
    with pytest.raises(ConfigError, match="workflow 'foo_1-bar_1': field 'source': no source named 'nope'"):
        load_config(write_config(doc(source="nope")))


def test_missing_destination(write_config) -> None:
    with pytest.raises(ConfigError, match="workflow 'foo_1-bar_1': field 'destinations': no destination named 'nope'"):
        load_config(write_config(doc(destinations=["dst", "nope"])))


def test_unknown_kind(write_config) -> None:
    with pytest.raises(ConfigError, match="field 'kind': unknown kind 'teleport'"):
        load_config(write_config(doc(kind="teleport")))


def test_unknown_type(write_config) -> None:
    with pytest.raises(ConfigError, match="sources\\[0\\] \\(src\\): field 'type': unknown type 'ftp'"):
        load_config(write_config({"sources": [{**S3_SOURCE, "type": "ftp"}]}))


def test_unknown_key_is_named(write_config) -> None:
    with pytest.raises(ConfigError, match="field 'batchsize': unknown key"):
        load_config(write_config(doc(batchsize=3)))


def test_non_strict_drops_broken_workflow_with_warning(write_config, caplog) -> None:
    document = doc()
    document["strict"] = False
    document["workflows"].append({"name": "broken", "source": "nope", "destinations": ["dst"]})
    with caplog.at_level(logging.WARNING):
        config = load_config(write_config(document))
    assert [w.name for w in config.workflows] == ["foo_1-bar_1"]
    assert len(config.dropped) == 1 and "broken" in config.dropped[0]
    assert any("broken" in record.getMessage() for record in caplog.records)


def test_filesystem_type_and_state(write_config, tmp_path: Path) -> None:
    document = {
        "sources": [{"name": "folder", "type": "filesystem", "path": str(tmp_path / "in")}],
        "destinations": [{"name": "out", "type": "filesystem", "path": str(tmp_path / "out")}],
        "workflows": [{"name": "local", "source": "folder", "destinations": ["out"]}],
    }
    config = load_config(write_config(document))
    assert config.source("folder").type == "filesystem"
    assert Path(config.state_store().path) == tmp_path / ".ingest-state"


def test_explicit_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    path = tmp_path / "ingest.yaml"
    path.write_text("")
    assert load_config(path).workflows == []
