"""A Python client of the dispatcher's HTTP API, blocking (`Client`) or asyncio (`AsyncClient`).

    from smartrouting.client import Client

    with Client("http://127.0.0.1:8080", api_key=None) as client:
        vectors = client.embed(["a cat sat on the mat"], model="all-MiniLM-L6-v2").vectors
        done = client.run_task("sample_task", "model-a", {"run_ms": 5})
        task_id = client.submit("embed_texts", "all-MiniLM-L6-v2", {"texts": ["x"]})
        print(client.result(task_id).result)

    with Client("http://127.0.0.1:8080", admin_key="...") as admin:  # model authors
        upload = admin.upload_model("BAAI/bge-small-en-v1.5", wait=False)
        published = admin.wait_for_upload(upload.upload_id, timeout_s=900)
        print(published.version, admin.model(published.model_name).loaded_on)

Every task gets its id on the client, before the first send: a retry (429 or 503 after
`Retry-After`, a connection error with backoff) sends the same id, and the dispatcher answers
the task it already has instead of running it again. `run_task(..., durable=True)` goes
through `POST /tasks` and a long poll, so with `--state-db` the task also survives a
dispatcher restart and runs once. `Client([url_a, url_b, ...])` takes several dispatchers that
share a task store: a retry after a connection error or a 503 goes to the next one, same id.
Only httpx is needed. See README.md "Calling the API".
"""

from smartrouting.client.aio import AsyncClient
from smartrouting.client.models import (
    APIError,
    ClientError,
    ConnectionFailed,
    DeletedModel,
    Embeddings,
    ModelInfo,
    RolledBack,
    TaskResult,
    TaskStatus,
    TaskTimeout,
    UploadedModel,
    UploadFailed,
    UploadPhase,
    UploadStatus,
    UploadTimeout,
    WorkerInfo,
)
from smartrouting.client.protocol import RetryPolicy
from smartrouting.client.sync import Client

__all__ = [
    "APIError",
    "AsyncClient",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "DeletedModel",
    "Embeddings",
    "ModelInfo",
    "RetryPolicy",
    "RolledBack",
    "TaskResult",
    "TaskStatus",
    "TaskTimeout",
    "UploadFailed",
    "UploadPhase",
    "UploadStatus",
    "UploadTimeout",
    "UploadedModel",
    "WorkerInfo",
]
