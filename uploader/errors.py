"""Errors of the uploader, each carrying the HTTP status and short code it maps to.

The service turns any `UploaderError` into `{"error": code, "detail": message}` with
`status_code`, in one place (`uploader.service`). The tree:

    UploaderError (500, "upload_failed")
    ├── InvalidRequest (400, "invalid_request")          malformed JSON, wrong types
    ├── BodyTooLarge (413, "body_too_large")
    ├── InvalidModelId (422, "invalid_model_id")         traversal, bad characters, too long
    ├── ModelNotFound (404, "model_not_found")           no local dir, alias, cache or hub entry
    ├── NotASentenceTransformer (422, "not_a_sentence_transformer")
    ├── UnsupportedModel (422, "unsupported_model")      a SentenceTransformer we cannot export
    ├── ValidationFailed (422, "validation_failed")      ONNX output differs from PyTorch
    ├── ModelExists (409, "model_exists")                published already, overwrite is false
    ├── UploadInProgress (409, "upload_in_progress")     another upload holds the model's lock
    └── ConversionError (500, "conversion_failed")       export or publish broke unexpectedly
"""

from __future__ import annotations

from typing import ClassVar


class UploaderError(Exception):
    """Base of every uploader error; `status_code` and `code` drive the HTTP answer."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "upload_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, str]:
        """The JSON error body: `{"error": code, "detail": message}`."""
        return {"error": self.code, "detail": self.message}


class InvalidRequest(UploaderError):
    """The request body is not JSON, not an object, or has fields of the wrong type."""

    status_code = 400
    code = "invalid_request"


class BodyTooLarge(UploaderError):
    """The request body is larger than the service reads."""

    status_code = 413
    code = "body_too_large"


class InvalidModelId(UploaderError):
    """A model id or model name that could escape the repository or is not allowed."""

    status_code = 422
    code = "invalid_model_id"


class ModelNotFound(UploaderError):
    """No local directory, alias, Hugging Face cache entry or hub repository has the model."""

    status_code = 404
    code = "model_not_found"


class NotASentenceTransformer(UploaderError):
    """The model exists but is not a SentenceTransformer (no modules.json, no config)."""

    status_code = 422
    code = "not_a_sentence_transformer"


class UnsupportedModel(UploaderError):
    """A SentenceTransformer whose modules this uploader cannot put in one ONNX graph."""

    status_code = 422
    code = "unsupported_model"


class ValidationFailed(UploaderError):
    """The exported graph does not reproduce SentenceTransformer.encode within tolerance."""

    status_code = 422
    code = "validation_failed"


class ModelExists(UploaderError):
    """The model is already published and the request did not ask to overwrite it."""

    status_code = 409
    code = "model_exists"


class UploadInProgress(UploaderError):
    """Another upload of the same model holds its lock right now."""

    status_code = 409
    code = "upload_in_progress"


class ConversionError(UploaderError):
    """Export, file writing or publishing failed for a reason not covered above."""

    status_code = 500
    code = "conversion_failed"


def all_error_classes() -> list[type[UploaderError]]:
    """Every error class of the package, the base included (for the status-code test)."""
    found: list[type[UploaderError]] = [UploaderError]
    stack = [UploaderError]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found
