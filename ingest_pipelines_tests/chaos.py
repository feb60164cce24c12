"""`make chaos`: the chaos soak through the documented processes, longer than the suite's (rounds and seed as
arguments). For each scenario it prints rounds, kills by victim, seconds to converge after the last kill, and
the lost / stale / missing / duplicated counts; exit status 1 when a scenario did not converge cleanly.

    python -m ingest_pipelines_tests.chaos --rounds 30 --seed 7 [--scenario sync-list sync-events bundle]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path

from ingest_pipelines.testing import MotoServer
from ingest_pipelines.testing.moto_server import TEST_CREDENTIALS
from ingest_pipelines_tests.chaos_sync import ChaosSettings, SyncChaos

SCENARIOS = ("sync-list", "sync-events", "bundle")


def run_sync(mode: str, rounds: int, seed: int, workdir: Path) -> dict:
    with MotoServer(log_path=workdir / "moto.log") as server:
        settings = ChaosSettings(rounds=rounds, seed=seed, mode=mode, converge_timeout=600)
        chaos = SyncChaos(workdir, server.endpoint_url, server.client("s3"), server.client("sqs"), settings)
        report = chaos.run()
    summary = report.summary()
    summary["ok"] = report.converged and not report.problems
    return summary


def run_bundle(rounds: int, seed: int, workdir: Path) -> dict:
    try:
        module = importlib.import_module("ingest_pipelines_tests.chaos_bundle")
    except ImportError:
        return {"ok": False, "problems": ["the bundle chaos scenario (ingest_pipelines_tests/chaos_bundle.py) is not in this checkout"]}
    return module.soak(rounds=rounds, seed=seed, workdir=workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--keep", action="store_true", help="keep the work folders (logs, instance, state)")
    args = parser.parse_args(argv)
    os.environ.update(TEST_CREDENTIALS)
    os.environ.pop("AWS_CA_BUNDLE", None)
    failed = False
    root = Path(tempfile.mkdtemp(prefix="ingest-chaos-"))
    for scenario in args.scenario:
        workdir = root / scenario
        workdir.mkdir(parents=True)
        print(f"=== {scenario}: {args.rounds} rounds, seed {args.seed} (work folder {workdir})", flush=True)
        if scenario == "bundle":
            summary = run_bundle(args.rounds, args.seed, workdir)
        else:
            summary = run_sync(scenario.removeprefix("sync-"), args.rounds, args.seed, workdir)
        print(json.dumps(summary, indent=2, default=str), flush=True)
        failed |= not summary.get("ok")
    if not args.keep and not failed:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
