"""The Pennsieve target against the API test server and the moto S3 server: the seed's env contract, the
import/credentials/upload calls, retries, resumable imports, the Lambda handler and the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ingest_pipelines.pennsieve import lambda_handler
from ingest_pipelines.pennsieve.client import PennsieveClient, PennsieveError, RetryPolicy, package_from_run
from ingest_pipelines.pennsieve.imports import ImportChangedError
from ingest_pipelines.pennsieve.inputs import ImportInputError
from ingest_pipelines.pennsieve.target import TargetSettings, run_target
from ingest_pipelines.state import StateStore
from ingest_pipelines.testing.pennsieve import run_with_packages
from ingest_pipelines_tests.conftest import subprocess_env
from ingest_pipelines_tests.pennsieve_support import DATASET, PACKAGE, RUN_ID, TOKEN, S3Proxy, uploaded

pytest_plugins = ["ingest_pipelines_tests.pennsieve_fixtures"]

FAST = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, timeout=(2.0, 10.0))


def write(root: Path, rel: str, data: bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def manifest(env: dict[str, str]) -> dict:
    settings = TargetSettings.from_env(env)
    from ingest_pipelines.config import FilesystemStoreConfig
    from ingest_pipelines.storage.filesystem import FilesystemStore

    return StateStore(FilesystemStore(FilesystemStoreConfig(name="s", path=settings.state_dir))).get_json(settings.manifest_key())


# ------------------------------------------------------------------ the env contract


def test_empty_input_is_success_without_any_request(api, target_env) -> None:
    result = run_target(target_env)
    assert result.import_id is None and result.files == 0
    assert api.requests == []


def test_missing_callback_token_is_reported_before_any_request(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"x")
    env = {k: v for k, v in target_env.items() if k != "CALLBACK_TOKEN"}
    with pytest.raises(PennsieveError, match="CALLBACK_TOKEN is required"):
        run_target(env)
    assert api.requests == []


def test_every_missing_required_variable_is_named() -> None:
    with pytest.raises(PennsieveError) as info:
        TargetSettings.from_env({"PACKAGE_ID": "p"})
    assert str(info.value) == "INPUT_DIR is required; CALLBACK_TOKEN is required; EXECUTION_RUN_ID is required; DATASET_ID is required"


def test_defaults_and_token_not_in_repr(target_env) -> None:
    settings = TargetSettings.from_env({**target_env, "PENNSIEVE_API_HOST2": ""})
    assert settings.api_host == "https://api2.pennsieve.net"
    assert (settings.import_type, settings.asset_type, settings.properties_file) == ("viewerAssets", "parquet-umap-viewer", None)
    assert TOKEN not in repr(settings)
    client = PennsieveClient("http://h", RUN_ID, TOKEN)
    assert TOKEN not in repr(client)


# ------------------------------------------------------------------ package lookup


def test_default_package_with_two_data_sources_fails_before_import(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"x")
    api.runs[RUN_ID] = run_with_packages(RUN_ID, DATASET, ["N:package:a"], ["N:package:b"])
    with pytest.raises(PennsieveError, match="execution run has 2 data sources, expected 1"):
        run_target({**target_env, "PACKAGE_ID": "default"}, retry=FAST)
    assert [r.path for r in api.requests] == [f"/compute/workflows/runs/{RUN_ID}"]
    assert api.calls("import") == []


def test_default_package_is_looked_up_from_the_run(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"x")
    api.runs[RUN_ID] = run_with_packages(RUN_ID, DATASET, ["N:package:only"])
    result = run_target({**target_env, "PACKAGE_ID": "default"}, retry=FAST)
    assert result.package_id == "N:package:only"
    assert api.calls("import")[0].json()["package_id"] == "N:package:only"


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"uuid": "r", "dataSources": {}}, "execution run has no data sources"),
        ({"uuid": "r", "dataSources": {"s1": {"packageIds": []}}}, "data source has no package IDs"),
        ({"uuid": "r", "dataSources": {"s1": {"packageIds": ["p1", "p2"]}}}, "data source has 2 packages, expected 1"),
    ],
)
def test_run_lookup_errors_are_the_seeds(run: dict, message: str) -> None:
    with pytest.raises(PennsieveError, match=message):
        package_from_run(run, "r")


def test_explicit_package_makes_no_run_lookup(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"x")
    run_target(target_env, retry=FAST)
    assert api.calls("run") == []
    assert api.calls("import")[0].json()["package_id"] == PACKAGE


# ------------------------------------------------------------------ import and upload


def test_files_are_imported_with_relative_paths_and_uploaded_to_their_keys(api, target_env, s3) -> None:
    root = Path(target_env["INPUT_DIR"])
    contents = {"a.parquet": os.urandom(1000), "sub/b.parquet": os.urandom(70_000)}
    for rel, data in contents.items():
        write(root, rel, data)
    result = run_target(target_env, retry=FAST)

    post, creds = api.calls("import"), api.calls("credentials")
    assert len(post) == 1 and len(creds) == 1
    assert post[0].query == {"dataset_id": [DATASET]} and creds[0].query == {"dataset_id": [DATASET]}
    assert all(r.headers["Authorization"] == f"Callback workflow-service:{RUN_ID}:{TOKEN}" for r in api.requests)
    body = post[0].json()
    assert body["integration_id"] == RUN_ID and body["package_id"] == PACKAGE and body["import_type"] == "viewerAssets"
    assert body["options"] == {"asset_type": "parquet-umap-viewer", "properties": {}}
    assert sorted(f["file_path"] for f in body["files"]) == ["a.parquet", "sub/b.parquet"]

    import_id = creds[0].path.split("/")[2]
    assert result.import_id == import_id and result.files == 2 and result.bytes == 71_000
    objects = uploaded(s3)
    assert objects == {f"{import_id}/{f['upload_key']}": contents[f["file_path"]] for f in body["files"]}
    recorded = manifest(target_env)
    assert recorded["import_id"] == import_id and recorded["status"] == "complete"
    assert {f["file_path"]: f["upload_key"] for f in recorded["files"]} == {f["file_path"]: f["upload_key"] for f in body["files"]}


def test_large_file_goes_multipart(api, target_env, s3) -> None:
    write(Path(target_env["INPUT_DIR"]), "big.bin", os.urandom(17 * 1024 * 1024))
    result = run_target(target_env, retry=FAST)
    key = f"{result.import_id}/{result.upload_keys['big.bin']}"
    head = s3.head_object(Bucket="pennsieve-uploads", Key=key)
    assert head["ContentLength"] == 17 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-3")  # 8 MiB parts


def test_properties_file_goes_into_options_and_is_not_uploaded(api, target_env, s3) -> None:
    root = Path(target_env["INPUT_DIR"])
    write(root, "a.parquet", b"data")
    write(root, "props.json", json.dumps({"title": "UMAP", "dims": 2}).encode())
    result = run_target({**target_env, "ASSET_PROPERTIES_FILE": "props.json", "IMPORT_TYPE": "other", "ASSET_TYPE": "t2"}, retry=FAST)
    body = api.calls("import")[0].json()
    assert body["options"] == {"asset_type": "t2", "properties": {"title": "UMAP", "dims": 2}}
    assert body["import_type"] == "other"
    assert [f["file_path"] for f in body["files"]] == ["a.parquet"]
    assert list(uploaded(s3)) == [f"{result.import_id}/{result.upload_keys['a.parquet']}"]


def test_missing_properties_file_is_empty_with_a_warning(api, target_env, caplog) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    with caplog.at_level(logging.WARNING):
        run_target({**target_env, "ASSET_PROPERTIES_FILE": "nope.json"}, retry=FAST)
    assert api.calls("import")[0].json()["options"]["properties"] == {}
    assert any("nope.json" in r.getMessage() and "not found" in r.getMessage() for r in caplog.records)


def test_invalid_properties_file_is_an_error_before_any_request(api, target_env) -> None:
    root = Path(target_env["INPUT_DIR"])
    write(root, "a.parquet", b"data")
    write(root, "props.json", b"{not json")
    with pytest.raises(ImportInputError, match="props.json: not valid JSON"):
        run_target({**target_env, "ASSET_PROPERTIES_FILE": "props.json"}, retry=FAST)
    assert api.requests == []


@pytest.mark.parametrize("name", ["../secret.json", "{outside}"])
def test_properties_file_outside_the_input_is_refused_before_any_request(api, target_env, tmp_path, name: str) -> None:
    # it was read from the local disk and sent to Pennsieve as options.properties
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    write(tmp_path, "secret.json", json.dumps({"password": "hunter2"}).encode())
    with pytest.raises(ImportInputError, match="must be inside the input folder"):
        run_target({**target_env, "ASSET_PROPERTIES_FILE": name.format(outside=tmp_path / "secret.json")}, retry=FAST)
    assert api.requests == []


def test_import_post_500_fails_and_uploads_nothing(api, target_env, s3) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    api.fail("import", 500, times=10, body={"message": "boom"})
    with pytest.raises(PennsieveError, match="POST /import: HTTP 500: .*boom") as info:
        run_target(target_env, retry=FAST)
    assert info.value.status == 500
    assert len(api.calls("import")) == FAST.max_attempts and api.calls("credentials") == []
    assert uploaded(s3) == {}


def test_503_once_then_created_makes_one_import(api, target_env, s3) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    api.fail("import", 503, times=1, headers={"Retry-After": "0"})
    result = run_target(target_env, retry=FAST)
    assert len(api.calls("import")) == 2 and len(api.imports) == 1
    assert list(api.imports) == [result.import_id]
    assert len(uploaded(s3)) == 1


def test_wrong_token_is_401_without_retry(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    with pytest.raises(PennsieveError, match="HTTP 401"):
        run_target({**target_env, "CALLBACK_TOKEN": "wrong"}, retry=FAST)
    assert len(api.requests) == 1 and api.imports == {}


def test_connection_errors_are_retried_then_reported(target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    from ingest_pipelines.testing import free_port

    with pytest.raises(PennsieveError, match="ConnectionError after 4 attempts"):
        run_target({**target_env, "PENNSIEVE_API_HOST2": f"http://127.0.0.1:{free_port()}"}, retry=FAST)


def test_credentials_near_expiration_are_fetched_again(api, target_env, s3) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    api.expires_in = [60.0, 3600.0]  # the first set is inside botocore's refresh window
    result = run_target(target_env, retry=FAST)
    assert len(api.calls("credentials")) == 2 and result.credential_refreshes == 1
    assert len(uploaded(s3)) == 1


# ------------------------------------------------------------------ resume


def test_failed_uploads_resume_into_the_same_import(api, target_env, s3, s3_server, monkeypatch) -> None:
    root = Path(target_env["INPUT_DIR"])
    for i in range(5):
        write(root, f"f{i}.parquet", os.urandom(5000))
    env = {**target_env, "PENNSIEVE_UPLOAD_THREADS": "1"}
    with S3Proxy(s3_server.endpoint_url, allow=2, mode="reject") as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)
        with pytest.raises(PennsieveError, match="3 of 5 files failed to upload"):
            run_target(env, retry=FAST)
        assert len(uploaded(s3)) == 2
        assert manifest(env)["status"] == "created"
        proxy.allow = None  # the store works again
        result = run_target(env, retry=FAST)
    assert len(api.calls("import")) == 1 and result.resumed
    assert (result.uploaded_files, result.skipped_files) == (3, 2)
    assert len(proxy.puts) == 5  # 2 in the first run, only the 3 missing ones in the second
    assert sorted(uploaded(s3)) == sorted(f"{result.import_id}/{key}" for key in result.upload_keys.values())
    assert manifest(env)["status"] == "complete"

    # an unfinished import whose input changed cannot be resumed silently
    state = manifest(env)
    state["status"] = "created"
    settings = TargetSettings.from_env(env)
    from ingest_pipelines.config import FilesystemStoreConfig
    from ingest_pipelines.storage.filesystem import FilesystemStore

    StateStore(FilesystemStore(FilesystemStoreConfig(name="s", path=settings.state_dir))).put_json(settings.manifest_key(), state)
    write(root, "late.parquet", b"late")
    with pytest.raises(ImportChangedError, match="added: late.parquet"):
        run_target(env, retry=FAST)
    assert len(api.calls("import")) == 1


def _cli(env: dict[str, str], **popen: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ingest_pipelines.cli", "pennsieve-target"],
        env=subprocess_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_cli_killed_mid_upload_resumes_the_same_import(api, target_env, s3, s3_server) -> None:
    root = Path(target_env["INPUT_DIR"])
    contents = {f"d/f{i}.parquet": os.urandom(64 * 1024) for i in range(5)}
    for rel, data in contents.items():
        write(root, rel, data)
    env = {**target_env, "PENNSIEVE_UPLOAD_THREADS": "1"}
    with S3Proxy(s3_server.endpoint_url, allow=2, mode="block") as proxy:
        process = _cli({**env, "AWS_ENDPOINT_URL_S3": proxy.url})
        try:
            assert proxy.blocked.wait(90), "the target never reached its third upload"
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(30)
        assert process.returncode == -signal.SIGKILL
        assert len(uploaded(s3)) == 2
        proxy.release.set()
        proxy.allow = None
        second = _cli({**env, "AWS_ENDPOINT_URL_S3": proxy.url})
        out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "success" and summary["resumed"] is True
    assert (summary["uploaded_files"], summary["skipped_files"]) == (3, 2)
    assert len(api.calls("import")) == 1 and summary["import_id"] in api.imports
    assert len(proxy.puts) == 5
    body = api.calls("import")[0].json()
    assert uploaded(s3) == {f"{summary['import_id']}/{f['upload_key']}": contents[f["file_path"]] for f in body["files"]}
    assert TOKEN not in out + err


def test_cli_exit_codes_and_messages(api, target_env) -> None:
    write(Path(target_env["INPUT_DIR"]), "a.parquet", b"data")
    env = {k: v for k, v in target_env.items() if k != "DATASET_ID"}
    failed = _cli({**env, "CALLBACK_TOKEN": TOKEN})
    out, err = failed.communicate(timeout=60)
    assert failed.returncode == 1 and "DATASET_ID is required" in err and TOKEN not in out + err
    assert api.requests == []

    ok = _cli(target_env)
    out, err = ok.communicate(timeout=60)
    assert ok.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["files"] == 1 and TOKEN not in out + err


# ------------------------------------------------------------------ Lambda


def _event(folder: Path, params: dict[str, str]) -> dict:
    return {
        "inputDir": str(folder),
        "executionRunId": RUN_ID,
        "callbackToken": TOKEN,
        "datasetId": DATASET,
        "organizationId": "N:organization:1",
        "targetType": "assets",
        "params": params,
    }


def test_lambda_params_do_not_leak_into_the_next_invocation(api, target_env, monkeypatch) -> None:
    root = Path(target_env["INPUT_DIR"])
    write(root, "a.parquet", b"data")
    monkeypatch.setenv("PENNSIEVE_API_HOST2", api.url)
    monkeypatch.setenv("PENNSIEVE_STATE_DIR", target_env["PENNSIEVE_STATE_DIR"])
    for name in ("IMPORT_TYPE", "ASSET_TYPE", "PACKAGE_ID", "CALLBACK_TOKEN", "INPUT_DIR"):
        monkeypatch.delenv(name, raising=False)
    before = dict(os.environ)

    first = lambda_handler(_event(root, {"IMPORT_TYPE": "firstType", "ASSET_TYPE": "firstAsset", "PACKAGE_ID": "N:package:first"}))
    assert first == {"status": "success", "executionRunId": RUN_ID}
    assert dict(os.environ) == before
    second = lambda_handler(_event(root, {"PACKAGE_ID": "N:package:second"}))
    assert second == {"status": "success", "executionRunId": RUN_ID}
    bodies = [r.json() for r in api.calls("import")]
    assert [(b["package_id"], b["import_type"], b["options"]["asset_type"]) for b in bodies] == [
        ("N:package:first", "firstType", "firstAsset"),
        ("N:package:second", "viewerAssets", "parquet-umap-viewer"),
    ]
    # a third call without PACKAGE_ID does not inherit the second's
    third = lambda_handler(_event(root, {}))
    assert third == {"status": "error", "executionRunId": RUN_ID}
    assert len(api.calls("import")) == 2 and dict(os.environ) == before
