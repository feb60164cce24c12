"""Run benchmarks: `python -m benchmarks` (all) or `python -m benchmarks sync inventory` (by name); `--big` adds the
1,000,000-key bucket (scale) and the 10,000,000-row inventory (~35 min more)."""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    if "--big" in argv:
        argv = [arg for arg in argv if arg != "--big"]
        os.environ["BENCH_BIG"] = "1"
    names = argv or sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"\n=== {name}", flush=True)
        started = time.time()
        result = module.main([])
        result = {"benchmark": name, "started": started, **(result or {})}
        (results_dir / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
