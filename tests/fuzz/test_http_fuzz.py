"""Fuzz the dispatcher's HTTP API from its own OpenAPI document (schemathesis + hypothesis).

A real dispatcher (uvicorn, ephemeral port) with one real worker process on the SIMULATED
engine, so tasks get real answers fast. Every response must conform to the document (status
code listed, JSON body matching its schema, content type) and no response may be a 500; the
other 5xx are documented answers a fuzzer can legitimately cause (504 for a 1e-300 s deadline),
so each must carry the JSON error body. The dispatcher must still answer /health afterwards.
`/upload-model` goes through to a real uploader service (empty repository, hub offline), so
generated model ids get the uploader's 4xx answers passed through.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from schemathesis import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatcher.config import Config
from dispatcher.openapi import openapi_document
from tests.dispatcher.conftest import RunningDispatcher, start_dispatcher
from tests.support import ProcessFactory, ThreadedServer, wait_until
from uploader.service import create_app as create_uploader

pytestmark = pytest.mark.timeout(180)

schema = schemathesis.openapi.from_dict(openapi_document())
# Valid requests and requests that break the schema (wrong types, missing fields, bad JSON).
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)

#: 5xx codes the API documents as answers to conditions a caller can cause.
DOCUMENTED_5XX = {"deadline_exceeded"}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDispatcher]:
    """A dispatcher with short deadlines and one simulated worker (time scale 0.01)."""
    tmp = tmp_path_factory.mktemp("fuzz")
    uploader = ThreadedServer(create_uploader(tmp / "models")).start()
    running = start_dispatcher(
        Config(task_timeout_s=5.0, max_queue=200, uploader_url=uploader.base_url)
    )
    processes = ProcessFactory(log_dir=Path(tmp))
    try:
        processes.worker(
            running.ws_url,
            "fuzz-worker",
            "--engine",
            "simulated",
            "--time-scale",
            "0.01",
            "--capacity",
            "4",
            "--slots",
            "4",
            "--state-dir",
            str(tmp / "state"),
            env={"HF_HUB_OFFLINE": "1"},
        )
        wait_until(lambda: bool(running.core.registry.workers), 60, "the worker to register")
        yield running
    finally:
        processes.close()
        running.stop()
        uploader.stop()


def no_internal_error(ctx: object, response: object, case: Case) -> bool | None:
    """No 500, and any other 5xx is one of the documented JSON errors."""
    status = response.status_code  # type: ignore[attr-defined]
    assert status != 500, f"500 from {case.method} {case.path}: {response.text[:300]}"  # type: ignore[attr-defined]
    if status >= 500:
        error = response.json().get("error")  # type: ignore[attr-defined]
        assert error in DOCUMENTED_5XX, f"{status} {error} from {case.method} {case.path}"
    return None


@schema.parametrize()
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    database=None,
)
def test_api_conforms_and_never_500s(case: Case, target: RunningDispatcher) -> None:
    """Generated requests (valid and invalid) get documented, schema-conforming answers."""
    response = case.call(base_url=target.base_url, timeout=30)
    no_internal_error(None, response, case)
    case.validate_response(
        response,
        checks=[status_code_conformance, content_type_conformance, response_schema_conformance],
    )


def test_dispatcher_survived_the_fuzzing(target: RunningDispatcher) -> None:
    """After the fuzzing the dispatcher still answers and its worker is still connected."""
    import httpx

    assert httpx.get(f"{target.base_url}/health", timeout=5).status_code == 200
    assert httpx.get(f"{target.base_url}/workers", timeout=5).json() == {"workers": ["fuzz-worker"]}
