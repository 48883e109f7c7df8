"""The uploader: SentenceTransformer → ONNX → Triton model repository entry.

A library (`convert_model`), a CLI (`python -m uploader convert|serve`) and an HTTP
service (`uploader.service.create_app`, `POST /upload-model`).
"""

from __future__ import annotations

from uploader.convert import PublishResult, convert_model
from uploader.errors import UploaderError

__all__ = ["PublishResult", "UploaderError", "convert_model"]
