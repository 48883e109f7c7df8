# syntax=docker/dockerfile:1
# The uploader: converts SentenceTransformers to ONNX (torch on the CPU) and writes them into
# the shared model repository; `python -m uploader serve` is its HTTP API.
#
#   docker build -f docker/uploader.Dockerfile -t smart-routing/uploader:0.1.0 .
#
# Build from the repository root. torch comes from PyTorch's CPU index: the default torch
# wheels on PyPI bundle CUDA (gigabytes) that the uploader never uses.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE}
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG EXTRAS=uploader,cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/smart-routing/src
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY dispatcher/ dispatcher/
COPY worker/ worker/
COPY uploader/ uploader/
COPY benchmark/ benchmark/
COPY smartrouting/ smartrouting/
RUN pip install --no-cache-dir ".[${EXTRAS}]" \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin smartrouting \
    && mkdir -p /models /cache \
    && chown 10001:10001 /models /cache
USER 10001:10001
WORKDIR /home/smartrouting
ENV HF_HOME=/cache/huggingface
EXPOSE 8081
CMD ["python", "-m", "uploader", "serve", "--host", "0.0.0.0", "--port", "8081", "--repository", "/models"]
