# syntax=docker/dockerfile:1
# The dispatcher: the base install of the project (starlette, uvicorn, websockets, protobuf,
# httpx, prometheus-client) and the PostgreSQL driver for the shared task store (several
# dispatchers). No torch, no onnxruntime, no numpy.
#
#   docker build -f docker/dispatcher.Dockerfile -t smart-routing/dispatcher:0.1.0 .
#
# Build from the repository root (the context must hold pyproject.toml and the packages).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY dispatcher/ dispatcher/
COPY worker/ worker/
COPY uploader/ uploader/
COPY benchmark/ benchmark/
COPY smartrouting/ smartrouting/
# A wheel of the project plus wheels of its base dependencies and the postgres extra.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "smart-routing[postgres]" \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin smartrouting
# The chart runs every pod as uid/gid 10001 (podSecurityContext); a numeric USER lets the
# kubelet check runAsNonRoot.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
ENV DISPATCHER_HOST=0.0.0.0 \
    DISPATCHER_PORT=8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2)"]
CMD ["python", "-m", "dispatcher"]
