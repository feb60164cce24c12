"""ingest_pipelines: a Dagster code location that moves objects out of S3 into the systems that need them."""

__version__ = "0.1.0"
