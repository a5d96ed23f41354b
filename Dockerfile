# settlewatch worker (and the other settlewatch commands) as a container image.
#
#   docker build -t settlewatch .
#   docker run --rm -p 127.0.0.1:9308:9308 -e SETTLEWATCH_BOOTSTRAP=kafka:9092 settlewatch
#
# Two stages: the first builds a virtualenv with the pinned dependencies (compilers only there,
# for a dependency that has no wheel on some platform), the second copies that virtualenv into
# a slim image and runs as an unprivileged user. Not built in CI (no Docker there):
# tests/deploy/test_compose.py checks that the packages and versions below are the ones
# pyproject.toml pins and that every file this copies exists.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/settlewatch
ENV PATH=/opt/settlewatch/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The dependencies first (their own layer, rebuilt only when this line changes): exactly the
# versions the test suite runs with; pyproject.toml's [project] dependencies, pinned.
RUN pip install \
      "faust-streaming==0.15.3" \
      "aiokafka==0.14.0" \
      "kafka-python==3.0.12" \
      "crc32c==2.9.post0" \
      "prometheus-client==0.26.0" \
      "numpy==2.4.6" \
      "orjson==3.13.0" \
      "click==8.3.3" \
      "aiosmtpd==1.4.6"
COPY pyproject.toml README.md /src/
COPY streams /src/streams
# --no-deps: everything it needs is installed above, so nothing unpinned slips in here.
RUN pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 settlewatch \
 && useradd --system --uid 10001 --gid settlewatch --home-dir /var/lib/settlewatch \
      --create-home --shell /usr/sbin/nologin settlewatch
COPY --from=build /opt/settlewatch /opt/settlewatch
COPY streams/data/settlewatch.toml /etc/settlewatch/settlewatch.toml
ENV PATH=/opt/settlewatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SETTLEWATCH_CONFIG=/etc/settlewatch/settlewatch.toml \
    SETTLEWATCH_METRICS_ADDR=0.0.0.0 \
    SETTLEWATCH_METRICS_PORT=9308 \
    SETTLEWATCH_DATA_DIR=/var/lib/settlewatch/faust
USER 10001:10001
WORKDIR /var/lib/settlewatch
EXPOSE 9308
# Liveness: the worker's event loop is turning (streams/live/health.py).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=4 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SETTLEWATCH_METRICS_PORT', '9308'), timeout=4)"]
ENTRYPOINT ["settlewatch"]
CMD ["worker"]
