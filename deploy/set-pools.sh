#!/usr/bin/env sh
# Set the concurrency pool limits for the external APIs on the instance in $DAGSTER_HOME.
# Dagster 1.13 keeps per-pool limits in the instance database; run once after creating it.
set -eu
dagster instance concurrency set gateway "${INGEST_POOL_GATEWAY:-4}"
dagster instance concurrency set pennsieve "${INGEST_POOL_PENNSIEVE:-2}"
dagster instance concurrency set policy "${INGEST_POOL_POLICY:-2}"
