"""Errors of the uploader, each carrying the HTTP status and short code it maps to.

An error is stored as an error (its class, a detail, maybe headers) until the service's one
exception handler (`uploader.service.handle_error`) renders it as
`{"error": code, "detail": detail}` with `status`; see docs/architecture.md §4.2. The tree:

    UploaderError (500, "upload_failed")
    ├── InvalidRequest (400, "invalid_request")          malformed JSON, unknown or mistyped fields
    ├── Unauthorized (401, "unauthorized")               admin key missing or wrong
    ├── RouteNotFound (404, "not_found")                 no route has this path
    ├── UploadNotFound (404, "upload_not_found")         no asynchronous upload has this id
    ├── MethodNotAllowed (405, "method_not_allowed")     the route exists, the method does not
    ├── BodyTooLarge (413, "body_too_large")
    ├── InvalidModelId (422, "invalid_model_id")         traversal, bad characters, too long
    ├── ModelNotFound (404, "model_not_found")           no local dir, alias, cache or hub entry
    ├── NotASentenceTransformer (422, "not_a_sentence_transformer")
    ├── UnsupportedModel (422, "unsupported_model")      a SentenceTransformer we cannot export
    ├── ValidationFailed (422, "validation_failed")      ONNX output differs from PyTorch
    ├── ModelExists (409, "model_exists")                published already, overwrite is false
    ├── UploadInProgress (409, "upload_in_progress")     another upload holds the model's lock
    ├── NoPreviousVersion (409, "no_previous_version")   a rollback with no older version left
    ├── TooManyUploads (429, "too_many_uploads")         asynchronous uploads waiting: at the bound
    ├── ConversionError (500, "conversion_failed")       export or publish broke unexpectedly
    └── InternalError (500, "internal_error")            any other exception (a bug), wrapped
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class UploaderError(Exception):
    """Base of every uploader error; `status` and `code` say how HTTP shows it."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "upload_failed"
    #: Headers every answer of the class carries (e.g. WWW-Authenticate on a 401).
    default_headers: ClassVar[Mapping[str, str]] = {}

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers: dict[str, str] = {**self.default_headers, **(headers or {})}

    def to_json(self) -> dict[str, str]:
        """The JSON error body: `{"error": code, "detail": detail}`."""
        return {"error": self.code, "detail": self.detail}


class InvalidRequest(UploaderError):
    """The request body is not JSON, not an object, or has unknown or mistyped fields."""

    status = 400
    code = "invalid_request"


class Unauthorized(UploaderError):
    """An admin key is configured and the request does not carry it (or carries another)."""

    status = 401
    code = "unauthorized"
    default_headers = {"WWW-Authenticate": 'Bearer realm="smart-routing"'}


class RouteNotFound(UploaderError):
    """No route matches the request's path."""

    status = 404
    code = "not_found"


class UploadNotFound(UploaderError):
    """No asynchronous upload has this id (unknown, or its status expired)."""

    status = 404
    code = "upload_not_found"


class MethodNotAllowed(UploaderError):
    """The path exists but not with this method (the `Allow` header lists those that do)."""

    status = 405
    code = "method_not_allowed"


class BodyTooLarge(UploaderError):
    """The request body is larger than the service reads."""

    status = 413
    code = "body_too_large"


class InvalidModelId(UploaderError):
    """A model id or model name that could escape the repository or is not allowed."""

    status = 422
    code = "invalid_model_id"


class ModelNotFound(UploaderError):
    """No local directory, alias, Hugging Face cache entry or hub repository has the model."""

    status = 404
    code = "model_not_found"


class NotASentenceTransformer(UploaderError):
    """The model exists but is not a SentenceTransformer (no modules.json, no config)."""

    status = 422
    code = "not_a_sentence_transformer"


class UnsupportedModel(UploaderError):
    """A SentenceTransformer whose modules this uploader cannot put in one ONNX graph."""

    status = 422
    code = "unsupported_model"


class ValidationFailed(UploaderError):
    """The exported graph does not reproduce SentenceTransformer.encode within tolerance."""

    status = 422
    code = "validation_failed"


class ModelExists(UploaderError):
    """The model is already published and the request did not ask to overwrite it."""

    status = 409
    code = "model_exists"


class UploadInProgress(UploaderError):
    """Another upload of the same model holds its lock right now."""

    status = 409
    code = "upload_in_progress"


class NoPreviousVersion(UploaderError):
    """A rollback of a model that has no older version left."""

    status = 409
    code = "no_previous_version"


class TooManyUploads(UploaderError):
    """As many asynchronous uploads as the service queues are waiting or running already."""

    status = 429
    code = "too_many_uploads"


class ConversionError(UploaderError):
    """Export, file writing or publishing failed for a reason not covered above."""

    status = 500
    code = "conversion_failed"


class InternalError(UploaderError):
    """An exception outside this tree (a bug or an unforeseen library error), wrapped."""

    status = 500
    code = "internal_error"

    @classmethod
    def wrap(cls, exc: BaseException) -> InternalError:
        """The error reporting `exc` as `<type>: <message>`; raise it `from exc`."""
        return cls(f"{type(exc).__name__}: {exc}")


def all_error_classes() -> list[type[UploaderError]]:
    """Every error class of the package, the base included (for the status-code test)."""
    found: list[type[UploaderError]] = [UploaderError]
    stack = [UploaderError]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found
