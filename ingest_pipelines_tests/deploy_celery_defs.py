"""Code location for the Celery test: the workflows of $INGEST_CONFIG plus a two-asset probe job whose
second op reads the first's output, so the value must cross worker processes through the IO manager."""

from __future__ import annotations

import os

import dagster as dg

from ingest_pipelines.config import load_config
from ingest_pipelines.defs import build_definitions
from ingest_pipelines.defs.executors import executor_for

config = load_config()


@dg.asset(key=["deploy_probe", "listing"])
def listing() -> dict[str, object]:
    return {"pid": os.getpid(), "keys": ["a", "b", "c"]}


@dg.asset(key=["deploy_probe", "summary"])
def summary(listing: dict[str, object]) -> dict[str, object]:
    return {"pid": os.getpid(), "upstream_pid": listing["pid"], "count": len(listing["keys"])}  # type: ignore[arg-type]


probe_job = dg.define_asset_job("deploy_probe_job", selection=[listing, summary], executor_def=executor_for(None, config))

defs = dg.Definitions.merge(build_definitions(config), dg.Definitions(assets=[listing, summary], jobs=[probe_job]))
