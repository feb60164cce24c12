"""Record destinations (the Conduit S3 destination): change records as JSON Lines or Parquet files.

The `s3-records` and `filesystem-records` destination types are plugins (entry points, see records/config.py).
"""

from ingest_pipelines.records.config import FilesystemRecordsConfig, RecordsDestinationConfig, S3RecordsConfig, is_records_destination
from ingest_pipelines.records.files import FORMATS, RecordFileError, read_records, record_file_key, write_records
from ingest_pipelines.records.record import OPERATIONS, ChangeRecord

__all__ = [
    "FORMATS",
    "OPERATIONS",
    "ChangeRecord",
    "FilesystemRecordsConfig",
    "RecordFileError",
    "RecordsDestinationConfig",
    "S3RecordsConfig",
    "is_records_destination",
    "read_records",
    "record_file_key",
    "write_records",
]
