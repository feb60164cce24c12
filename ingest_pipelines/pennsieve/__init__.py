"""`pennsieve` workflows: import files into the Pennsieve platform (POST /import, upload credentials, S3 upload).

Runs as a Dagster asset, as the seed's ECS task (`ingest-pipelines pennsieve-target`) or as a Lambda handler.
"""

from __future__ import annotations

from typing import Any


def lambda_handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entry point `ingest_pipelines.pennsieve.lambda_handler` (see aws_lambda.py)."""
    from ingest_pipelines.pennsieve.aws_lambda import lambda_handler as handler

    return handler(event, context)
