# syntax=docker/dockerfile:1
# Hodhod: one image for every service. Pick the services with the command:
#   docker run IMAGE up --only tracker        (one service per container, production)
#   docker run IMAGE migrate                  (Postgres + ClickHouse migrations)
#   docker run IMAGE topics                   (create the Kafka topics)
# Infrastructure comes from the environment (see docs/deploy.md).

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: install the distribution (no dev extras) into a virtualenv ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package needs; .dockerignore keeps the rest out of the context.
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
COPY migrations ./migrations
RUN pip install --upgrade pip \
    && pip install . \
    && hodhod --help >/dev/null

# ---- runtime ----
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HODHOD_ENVIRONMENT=production \
    HODHOD_HTTP_HOST=0.0.0.0 \
    HODHOD_HTTP_PORT=8080 \
    HODHOD_VAR_DIR=/var/lib/hodhod
# `hodhod up` keeps a lock and a state file under HODHOD_VAR_DIR; it must be writable.
RUN groupadd --system --gid 10001 hodhod \
    && useradd --system --uid 10001 --gid hodhod --home-dir /home/hodhod --create-home \
       --shell /usr/sbin/nologin hodhod \
    && mkdir -p /var/lib/hodhod \
    && chown hodhod:hodhod /var/lib/hodhod
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/hodhod
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HODHOD_HTTP_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["hodhod"]
CMD ["up", "--only", "tracker,ingest,attribution,segmenter,journey,dispatcher,admin"]
