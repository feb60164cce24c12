"""Uploads an import's files to `s3://{bucket}/{importId}/{uploadKey}` with the import's temporary credentials.

One boto3 transfer manager for all files (multipart for large ones, a shared thread pool); credentials refreshed before they expire.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import boto3
import botocore.session
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, Credentials, RefreshableCredentials
from botocore.exceptions import ClientError

from ingest_pipelines.pennsieve.client import UploadCredentials
from ingest_pipelines.pennsieve.inputs import ImportInputs, InputFile

log = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class UploadSettings:
    """How the upload runs: requests in flight, and when and how large the multipart parts are."""

    threads: int = 8
    multipart_threshold: int = 16 * MIB
    multipart_chunksize: int = 8 * MIB

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.threads,
            use_threads=True,
        )


@dataclass(frozen=True)
class PlannedUpload:
    """One file and the key it goes to (relative to the import's folder in the bucket)."""

    item: InputFile
    upload_key: str


@dataclass
class UploadReport:
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    #: (file_path, reason) for each file that failed.
    failures: list[tuple[str, str]] = field(default_factory=list)


class _ImportCredentialProvider(CredentialProvider):
    """Hands botocore the import's credentials and nothing else (no fallback to the environment)."""

    METHOD = "pennsieve-upload-credentials"

    def __init__(self, credentials: Credentials):
        super().__init__()
        self._credentials = credentials

    def load(self) -> Credentials:
        return self._credentials


def _metadata(credentials: UploadCredentials) -> dict[str, Any]:
    return {
        "access_key": credentials.access_key_id,
        "secret_key": credentials.secret_access_key,
        "token": credentials.session_token,
        "expiry_time": credentials.expiration,
    }


class ImportBucket:
    """The import's folder in Pennsieve's upload bucket, reached with the scoped credentials.

    `refresh` fetches new credentials; botocore calls it when the current ones are near `expiration`.
    """

    def __init__(
        self,
        import_id: str,
        credentials: UploadCredentials,
        refresh: Callable[[], UploadCredentials] | None = None,
        settings: UploadSettings | None = None,
    ):
        self.import_id = import_id
        self.bucket = credentials.bucket
        self.settings = settings or UploadSettings()
        self.refreshes = 0
        session = botocore.session.get_session()
        if credentials.expiration and refresh is not None:

            def fetch() -> dict[str, Any]:
                self.refreshes += 1
                fresh = refresh()
                log.info("import %s: fetched new upload credentials (expire %s)", import_id, fresh.expiration)
                return _metadata(fresh)

            creds: Credentials = RefreshableCredentials.create_from_metadata(
                _metadata(credentials), fetch, _ImportCredentialProvider.METHOD
            )
        else:
            creds = Credentials(credentials.access_key_id, credentials.secret_access_key, credentials.session_token)
        session.register_component("credential_provider", CredentialResolver([_ImportCredentialProvider(creds)]))
        # the endpoint follows boto3's own AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL settings
        self.client = boto3.session.Session(botocore_session=session).client(
            "s3",
            region_name=credentials.region or "us-east-1",
            config=Config(max_pool_connections=max(10, self.settings.threads * 2), retries={"max_attempts": 8, "mode": "standard"}),
        )

    def key(self, upload_key: str) -> str:
        return f"{self.import_id}/{upload_key}"

    def uri(self, upload_key: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(upload_key)}"

    def _present(self, planned: PlannedUpload) -> bool:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(planned.upload_key))
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchKey", "NotFound", "403", "AccessDenied", "Forbidden"}:
                # 403: the scoped credentials may not allow reads; uploading again is the safe answer
                return False
            raise
        return int(head.get("ContentLength", -1)) == planned.item.size

    def missing(self, planned: list[PlannedUpload]) -> list[PlannedUpload]:
        """The planned uploads whose object is absent (or has another size): HEAD each, in parallel."""
        if not planned:
            return []
        with ThreadPoolExecutor(max_workers=self.settings.threads) as pool:
            present = list(pool.map(self._present, planned))
        return [item for item, there in zip(planned, present, strict=True) if not there]

    def upload(self, planned: Iterable[PlannedUpload], inputs: ImportInputs) -> UploadReport:
        """Upload every planned file; a failed file is reported, the others still go."""
        report = UploadReport()
        lock = threading.Lock()
        # bounded: S3 sources hold an open GET per submitted file, so only a window of files is in flight
        window = self.settings.threads * 2
        in_flight: deque[tuple[PlannedUpload, Future[Any], Any]] = deque()

        def settle(entry: tuple[PlannedUpload, Future[Any], Any]) -> None:
            plan, future, handle = entry
            try:
                future.result()
            except Exception as exc:
                with lock:
                    report.failures.append((plan.item.file_path, f"{type(exc).__name__}: {exc}"))
                log.warning("import %s: %s failed to upload: %s", self.import_id, plan.item.file_path, exc)
            else:
                with lock:
                    report.uploaded_files += 1
                    report.uploaded_bytes += plan.item.size
            finally:
                if handle is not None:
                    handle.close()

        with create_transfer_manager(self.client, self.settings.transfer_config()) as manager:
            for plan in planned:
                while len(in_flight) >= window:
                    settle(in_flight.popleft())
                try:
                    handle = None
                    if plan.item.local_path is not None:
                        source: Any = str(plan.item.local_path)
                    else:
                        handle = source = inputs.open(plan.item)
                    future = manager.upload(source, self.bucket, self.key(plan.upload_key))
                except Exception as exc:
                    report.failures.append((plan.item.file_path, f"{type(exc).__name__}: {exc}"))
                    continue
                in_flight.append((plan, future, handle))
            while in_flight:
                settle(in_flight.popleft())
        return report
