# syntax=docker/dockerfile:1
# One Dockerfile for the three service images. Build context: the repository root.
# SERVICE picks the workspace package to install, the target picks the entry point;
# they must name the same service (docker-compose.yml passes both):
#   docker build --build-arg SERVICE=ingest --target ingest -t clm-stream/ingest .
#   docker build --build-arg SERVICE=stage-engine --target stage-engine -t clm-stream/stage-engine .
#   docker build --build-arg SERVICE=metrics --target metrics -t clm-stream/metrics .
# Every image also carries the operator CLI (`clm`, package clm-cli) and the Alembic
# migrations, so `docker compose run --rm ingest clm keys create ...` works in any of them.
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder --
FROM ${PYTHON_IMAGE} AS builder

ARG SERVICE
RUN case "${SERVICE}" in ingest|stage-engine|metrics) ;; \
      *) echo "build with --build-arg SERVICE=ingest|stage-engine|metrics (got '${SERVICE}')" >&2; exit 1 ;; \
    esac

# uv comes from PyPI so the build needs nothing but the package registries.
ARG UV_VERSION=0.13.8
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /app

# 1) Third-party dependencies only: this layer is rebuilt only when a
#    pyproject.toml or uv.lock changes. uv needs every workspace member's
#    pyproject.toml to read the workspace, not just this service's.
COPY pyproject.toml uv.lock ./
COPY libs/common/domain/pyproject.toml libs/common/domain/pyproject.toml
COPY libs/common/infra/pyproject.toml libs/common/infra/pyproject.toml
COPY libs/common/web/pyproject.toml libs/common/web/pyproject.toml
COPY libs/common/predict/pyproject.toml libs/common/predict/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/stage-engine/pyproject.toml services/stage-engine/pyproject.toml
COPY services/metrics/pyproject.toml services/metrics/pyproject.toml
COPY tools/devstack/pyproject.toml tools/devstack/pyproject.toml
COPY tools/cli/pyproject.toml tools/cli/pyproject.toml
COPY tools/simulator/pyproject.toml tools/simulator/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "clm-${SERVICE}" --package clm-cli

# 2) The workspace code this service and the CLI need, installed as regular
#    (non-editable) packages so the runtime stage needs only the venv.
COPY libs/common/domain/src libs/common/domain/src
COPY libs/common/infra/src libs/common/infra/src
COPY libs/common/web/src libs/common/web/src
COPY libs/common/predict/src libs/common/predict/src
COPY tools/cli/src tools/cli/src
COPY tools/simulator/src tools/simulator/src
COPY services/${SERVICE}/src services/${SERVICE}/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "clm-${SERVICE}" --package clm-cli

# ---------------------------------------------------------------- runtime --
# What the three images share: the venv, a non-root user, the migrations.
FROM ${PYTHON_IMAGE} AS runtime

# Each service reads only its own *_HOST; inside a container all listen on every interface.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CLM_INGEST_HOST=0.0.0.0 \
    CLM_STAGE_ENGINE_HOST=0.0.0.0 \
    CLM_METRICS_HOST=0.0.0.0

RUN groupadd --system --gid 10001 clm \
 && useradd --system --uid 10001 --gid clm --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin clm

WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
# The migrate job (clm migrate, run from /app) works in any image.
COPY alembic.ini ./alembic.ini
COPY migrations ./migrations

USER clm:clm

# ----------------------------------------------------------------- ingest --
FROM runtime AS ingest
ENV CLM_INGEST_PORT=8001
EXPOSE 8001
# slim has no curl: ask /healthz with the standard library (non-2xx -> error).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLM_INGEST_PORT', '8001') + '/healthz', timeout=4)"]
CMD ["python", "-m", "clm_ingest"]

# ----------------------------------------------------------- stage-engine --
FROM runtime AS stage-engine
# the lifecycle rules (CLM_STAGE_ENGINE_RULES_PATH points here; mount your own to change them)
COPY deploy/config/lifecycle.yaml ./config/lifecycle.yaml
ENV CLM_STAGE_ENGINE_PORT=8002 \
    CLM_STAGE_ENGINE_RULES_PATH=/app/config/lifecycle.yaml
EXPOSE 8002
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLM_STAGE_ENGINE_PORT', '8002') + '/healthz', timeout=4)"]
CMD ["python", "-m", "clm_stage_engine"]

# ---------------------------------------------------------------- metrics --
FROM runtime AS metrics
ENV CLM_METRICS_PORT=8003
EXPOSE 8003
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('CLM_METRICS_PORT', '8003') + '/healthz', timeout=4)"]
CMD ["python", "-m", "clm_metrics"]
