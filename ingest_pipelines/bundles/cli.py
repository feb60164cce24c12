"""`ingest-pipelines serve` (the bundle HTTP front door) and `ingest-pipelines job` (Pacifica's admin
subcommand that sets a stuck job's state)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ingest_pipelines.bundles.jobs import STATES, JobNotFound, JobStore
from ingest_pipelines.config import ConfigError, load_config

log = logging.getLogger(__name__)


def _config_error(exc: ConfigError) -> int:
    print(f"ingest-pipelines: error: {exc}", file=sys.stderr)
    return 2


def _task_percent(value: str) -> float:
    percent = float(value)
    if not 0.0 <= percent <= 100.0:
        raise argparse.ArgumentTypeError(f"{value!r} is not between 0 and 100")
    return percent


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ingest_pipelines.bundles.server import build_app

    try:
        config = load_config(args.config)
        workflows = config.workflows_of("bundle")
    except ConfigError as exc:
        return _config_error(exc)
    if args.no_launch:
        app = build_app(config, None)
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
        return 0
    # the Dagster side is imported only here: the domain layer stays free of Dagster
    from ingest_pipelines.defs.bundles.launcher import RunSubmitter, location_report
    from ingest_pipelines.defs.bundles.reconcile import FrontDoorReconciler

    with RunSubmitter(module=args.module, workspace_file=args.workspace, location_name=args.location_name) as submit:
        names = submit.location_names()
        log.info("code location %s loaded from %s", ", ".join(repr(n) for n in names) or "(none)", submit.location.description)
        for name in names[:1]:
            for level, message in location_report(submit.instance, name, workflows):
                log.log(level, message)
        reconciler = FrontDoorReconciler(config, submit.instance, submit).start()
        try:
            app = build_app(config, reconciler.launch_new)
            uvicorn.run(app, host=args.host, port=args.port, log_level="info")
        finally:
            reconciler.stop()
    return 0


def run_job_command(args: argparse.Namespace) -> int:
    fields: dict[str, object] = {}
    for option, field in (("state", "state"), ("task", "task"), ("task_percent", "task_percent"), ("exception", "exception")):
        value = getattr(args, option)
        if value is not None:
            fields[field] = value
    try:
        config = load_config(args.config)
        urls = dict.fromkeys(w.jobs_url(config) for w in config.workflows_of("bundle", args.workflow))
    except ConfigError as exc:
        return _config_error(exc)
    for url in urls:
        store = JobStore(url)
        if store.find(args.job_id) is None:
            continue
        if args.retry:
            store.retry(args.job_id, args.exception or "retry requested by an administrator")
            fields.pop("exception", None)
        job = store.update(args.job_id, **fields) if fields else store.get(args.job_id)
        print(json.dumps(job.to_api(), indent=2))
        return 0
    print(str(JobNotFound(args.job_id)), file=sys.stderr)
    return 1


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="the bundle HTTP front door (Pacifica's /ingest, /move, /get_state)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8066)
    serve.add_argument("--config", default=None, help="ingest.yaml (default $INGEST_CONFIG, else ./ingest.yaml)")
    serve.add_argument(
        "--workspace",
        default=None,
        help="the workspace.yaml the daemon uses (default: ./workspace.yaml, else ./pyproject.toml [tool.dagster], as the daemon finds them)",
    )
    serve.add_argument("--module", default=None, help="a code location module instead, as given to `dagster-daemon run -m`")
    serve.add_argument("--location-name", default=None, help="the code location's name when it is not the module name")
    serve.add_argument("--no-launch", action="store_true", help="do not launch runs; leave new jobs to the drop sensor")
    serve.set_defaults(func=run_serve)

    job = subparsers.add_parser("job", help="set a bundle job's state (e.g. fail a stuck job)")
    job.add_argument("--job-id", type=int, required=True)
    job.add_argument("--state", choices=STATES)
    job.add_argument("--task", help="task name, e.g. 'ingest files'")
    job.add_argument("--task-percent", type=_task_percent, help="0 to 100")
    job.add_argument("--exception", help="the message shown in the job state")
    job.add_argument("--retry", action="store_true", help="give a FAILED or stuck job one more attempt now (the reconcilers run it)")
    job.add_argument("--workflow", default=None, help="the bundle workflow (default: every bundle workflow's job store)")
    job.add_argument("--config", default=None, help="ingest.yaml (default $INGEST_CONFIG, else ./ingest.yaml)")
    job.set_defaults(func=run_job_command)
