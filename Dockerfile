# User-code image: the ingest_pipelines code server (gRPC on port 4000). The webserver and daemon
# use Dagster's own image (or this one) and reach it through workspace.yaml `grpc_server` entries.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    INGEST_CONFIG=/etc/ingest/ingest.yaml

WORKDIR /opt/ingest_pipelines
COPY pyproject.toml README.md ./
COPY ingest_pipelines ./ingest_pipelines
# no extras: moto (`demo`) and the dev tools (`dev`: pytest, ruff, dg) stay out of the production image
RUN pip install . \
    && mkdir -p "$DAGSTER_HOME" /etc/ingest \
    && useradd --system --uid 10001 --home-dir /opt/dagster dagster \
    && chown -R dagster "$DAGSTER_HOME"
# The instance config: PostgreSQL from DAGSTER_PG_* env vars (see deploy/dagster.yaml).
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml

USER dagster
EXPOSE 4000
# ingest.yaml is mounted at $INGEST_CONFIG (ConfigMap, EFS or baked into a derived image).
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "ingest_pipelines.definitions"]
