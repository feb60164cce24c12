"""`ingest-pipelines`: the demo, the subcommands each workflow kind adds (sync, serve, job, pennsieve-target) and `plugins`.

Each kind's CLI module exposes `add_parsers(subparsers)`; the handler is set with `set_defaults(func=...)`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from ingest_pipelines.testing.moto_server import MotoNotInstalled, moto_installed

#: modules that add subcommands (skipped when not present).
CLI_MODULES = (
    "ingest_pipelines.demo",
    "ingest_pipelines.sync.cli",
    "ingest_pipelines.bundles.cli",
    "ingest_pipelines.pennsieve.cli",
    "ingest_pipelines.plugins.cli",
)

#: subcommands that start a local S3 server: moto, from the `demo` extra (a plain install leaves it out).
NEEDS_MOTO = frozenset({"demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingest-pipelines", description="Move objects out of S3 into the systems that need them (Dagster code location)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in CLI_MODULES:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None or importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module).add_parsers(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command in NEEDS_MOTO and not moto_installed():  # checked before the demo writes or deletes anything
        print(f"ingest-pipelines {args.command}: {MotoNotInstalled()}", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
