"""`ingest-pipelines sync status` (what is pending, waiting for a retry, or stuck, per sync workflow) and
`ingest-pipelines sync retry` (forget the failed attempts of stuck batches, so the sensor tries them again)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ingest_pipelines.config import ConfigError, IngestConfig, load_config
from ingest_pipelines.sync.config import SyncWorkflow
from ingest_pipelines.sync.ledger import SyncLedger, default_ledger_url
from ingest_pipelines.sync.reconcile import health, pending_state


def _ledger(workflow: SyncWorkflow, config: IngestConfig) -> SyncLedger:
    return SyncLedger(workflow.ledger or default_ledger_url(config))


def run_status(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        workflows: list[SyncWorkflow] = config.workflows_of("sync", args.workflow)
    except ConfigError as exc:
        print(f"ingest-pipelines: error: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    stuck = False
    for workflow in workflows:
        state = pending_state(_ledger(workflow, config), workflow, now)
        result = health(state, workflow, now)
        stuck |= not result.passed
        doc = {
            "workflow": workflow.name,
            "converging": result.passed,
            "summary": result.description,
            "pending": len(state.pending),
            "due": len(state.due),
            "waiting_for_retry": len(state.waiting),
            "exhausted": [b.batch_id for b in state.exhausted][:50],
            "last_error": state.last_error(),
        }
        print(json.dumps(doc, indent=2))
    return 1 if stuck else 0


def run_retry(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        (workflow,) = config.workflows_of("sync", args.workflow)
    except ConfigError as exc:
        print(f"ingest-pipelines: error: {exc}", file=sys.stderr)
        return 2
    reset = _ledger(workflow, config).reset_attempts(workflow.name, args.batch or None)
    print(f"{workflow.name}: {reset} unapplied batch(es) will be tried again at the sensor's next tick")
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    sync = subparsers.add_parser("sync", help="sync workflows: what is pending or stuck, and retrying stuck batches")
    commands = sync.add_subparsers(dest="sync_command", metavar="SUBCOMMAND", required=True)
    status = commands.add_parser("status", help="pending, waiting and stuck batches per sync workflow (exit 1 when one is stuck)")
    status.add_argument("--workflow", default=None)
    status.add_argument("--config", default=None, help="ingest.yaml (default $INGEST_CONFIG, else ./ingest.yaml)")
    status.set_defaults(func=run_status)
    retry = commands.add_parser("retry", help="forget the failed attempts of unapplied batches: the sensor tries them again")
    retry.add_argument("--workflow", required=True)
    retry.add_argument("--batch", action="append", help="only this batch id (repeatable); default every unapplied batch")
    retry.add_argument("--config", default=None, help="ingest.yaml (default $INGEST_CONFIG, else ./ingest.yaml)")
    retry.set_defaults(func=run_retry)
