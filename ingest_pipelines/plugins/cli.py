"""`ingest-pipelines plugins`: every installed type (entry points of `ingest_pipelines.plugins`) with its roles,
where it comes from and its keys; types that cannot be loaded are listed with the reason (exit status 1)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parsers(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "plugins", help="list the installed source and destination types and their keys", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=run)


def format_text(entries: list[dict[str, Any]]) -> str:
    lines = []
    for entry in entries:
        if "error" in entry:
            lines += [f"{entry['type']}  [cannot be loaded]", f"    {entry['error']}", ""]
            continue
        lines.append(f"{entry['type']}  [{', '.join(entry['roles'])}]  {entry['origin']}")
        if entry.get("summary"):
            lines.append(f"    {entry['summary']}")
        width = max((len(key["key"]) for key in entry["keys"]), default=0)
        for key in entry["keys"]:
            detail = "required" if key["required"] else f"default {json.dumps(key.get('default'))}"
            lines.append(f"    {key['key']:<{width}}  {key['type']}, {detail}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ingest_pipelines.plugins.registry import REGISTRY

    entries = list(REGISTRY.describe())
    if args.json:
        json.dump(entries, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(entries))
    return 1 if any("error" in entry for entry in entries) else 0
