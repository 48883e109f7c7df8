# syntax=docker/dockerfile:1
# A GPU worker: the official Triton image (Triton 2.51, with the ONNX Runtime backend) plus
# the project with the `worker` and `gpu` extras (tritonclient, tokenizers, onnxruntime-gpu).
# The worker starts `tritonserver` (on PATH in this image) itself and serves the models of
# the shared repository with their `configs/onnxruntime.pbtxt` (docs/interfaces.md section 1).
#
#   docker build -f docker/worker.Dockerfile -t smart-routing/worker:0.1.0 .
#
# Build from the repository root.

ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

FROM ${TRITON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/smart-routing/src
COPY pyproject.toml README.md ./
COPY proto/ proto/
COPY dispatcher/ dispatcher/
COPY worker/ worker/
COPY uploader/ uploader/
COPY benchmark/ benchmark/
COPY smartrouting/ smartrouting/
# The image's Python 3 is the one Triton's Python backend embeds; install into it (with pip
# from Ubuntu should the image ever ship without it).
RUN (python3 -m pip --version \
        || (apt-get update \
            && apt-get install -y --no-install-recommends python3-pip \
            && rm -rf /var/lib/apt/lists/*)) \
    && python3 -m pip install --no-cache-dir ".[worker,gpu]" \
    && ln -sf "$(command -v python3)" /usr/local/bin/python \
    && useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin smartrouting \
    && mkdir -p /models \
    && chown 10001:10001 /models
USER 10001:10001
WORKDIR /home/smartrouting
ENV MODEL_REPOSITORY=/models \
    WORKER_DEVICE=cuda:0
# Replaces the image's entrypoint banner script: the worker is PID 1 and gets SIGTERM
# directly, which starts its drain (stop taking tasks, finish or hand back, stop Triton).
ENTRYPOINT []
CMD ["python", "-m", "worker", "--engine", "triton", "--triton-model-config", "onnxruntime"]
