"""`ingest-pipelines pennsieve-target`: the seed's ECS task, configured by its environment variables.

Prints a one-line JSON summary on success; on error prints the reason and exits 1 (the token is never printed).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ingest_pipelines.pennsieve.client import PennsieveError
from ingest_pipelines.pennsieve.target import REQUIRED_VARIABLES, STATE_DIR_VARIABLE, UPLOAD_THREADS_VARIABLE, run_target

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    try:
        result = run_target()
    except PennsieveError as exc:
        print(f"pennsieve-target: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # anything else is still a failed task with a reason, not a traceback dump
        log.debug("pennsieve-target failed", exc_info=True)
        print(f"pennsieve-target: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"status": "success", **result.summary()}))
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pennsieve-target",
        help="import INPUT_DIR into Pennsieve (the seed's ECS task; configured by environment variables)",
        description=(
            f"Required: {', '.join(REQUIRED_VARIABLES)}. Optional: PENNSIEVE_API_HOST2, ORGANIZATION_ID, IMPORT_TYPE, "
            f"ASSET_TYPE, ASSET_PROPERTIES_FILE, {STATE_DIR_VARIABLE}, {UPLOAD_THREADS_VARIABLE}. Exit 1 on error."
        ),
    )
    parser.set_defaults(func=run)
