"""The official `openai` client and our client against a real dispatcher and a real Triton worker.

Real processes: `python -m dispatcher` and `python -m worker --engine triton` serving the real
all-MiniLM-L6-v2 (converted once per session: tests/worker/conftest.py). The ground truth is
SentenceTransformer: embeddings within 1e-4, and `usage.prompt_tokens` equal to what the
model's own tokenizer makes of the texts (truncated to its max sequence length).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from smartrouting.client import Client
from tests.support import ProcessFactory, free_port, wait_until
from tests.uploader.triton import pytriton_dir
from tests.worker.conftest import LABELS, TEXTS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.triton,
    pytest.mark.skipif(pytriton_dir() is None, reason="nvidia-pytriton is not installed"),
]

#: TEXTS and one past the model's 256-token limit, so truncation is counted as the model sees it.
INPUTS = [*TEXTS, "word " * 400]


def tokens_of(model: Any, texts: list[str]) -> int:
    """Tokens SentenceTransformer's tokenizer makes of `texts` ([CLS] and [SEP] included)."""
    encoded = model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)
    return sum(len(ids) for ids in encoded["input_ids"])


def test_openai_client_matches_sentence_transformer(
    processes: ProcessFactory, tmp_path: Path, model_repository: Path, sentence_transformer: Any
) -> None:
    """/v1/embeddings through the official client: float and base64 equal SentenceTransformer's
    embeddings within 1e-4, usage counts the tokenizer's tokens, an unknown model is OpenAI's
    404; `smartrouting.client.Client.embed` gets the same vectors and count."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes.dispatcher(port, "--log-level", "warning")
    processes.worker(
        f"ws://127.0.0.1:{port}/worker-listen",
        "openai-triton",
        "--engine",
        "triton",
        "--capacity",
        "1",
        "--model-repository",
        str(model_repository),
        "--state-dir",
        str(tmp_path / "worker"),
        env={"HF_HUB_OFFLINE": "1"},
    )
    wait_until(
        lambda: "openai-triton" in httpx.get(f"{base}/workers", timeout=2).json()["workers"],
        120,
        "the Triton worker to connect",
    )
    reference = sentence_transformer.encode(INPUTS, convert_to_numpy=True)
    expected_tokens = tokens_of(sentence_transformer, INPUTS)
    label = LABELS[0]

    with openai.OpenAI(base_url=f"{base}/v1", api_key="unused", timeout=300) as client:
        floats = client.embeddings.create(model=label, input=INPUTS, encoding_format="float")
        default = client.embeddings.create(model=label, input=INPUTS)  # base64 on the wire
        one = client.embeddings.create(model=label, input=TEXTS[0])
        with pytest.raises(openai.NotFoundError) as missing:
            client.embeddings.create(model="no-such-model", input="x")
        models = [m.id for m in client.models.list().data]
    raw_b64 = httpx.post(
        f"{base}/v1/embeddings",
        json={"model": label, "input": INPUTS, "encoding_format": "base64"},
        timeout=300,
    ).json()

    got_float = np.array([d.embedding for d in floats.data], dtype=np.float32)
    got_default = np.array([d.embedding for d in default.data], dtype=np.float32)
    got_b64 = np.stack(
        [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw_b64["data"]]
    )
    diff = float(np.abs(got_float - reference).max())
    print(f"\nOPENAI max abs diff vs SentenceTransformer: {diff:.3g}; tokens {expected_tokens}")
    assert got_float.shape == (len(INPUTS), 384) and diff < 1e-4
    assert np.array_equal(got_b64, got_float) and np.array_equal(got_default, got_float)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == expected_tokens
    assert one.usage.prompt_tokens == tokens_of(sentence_transformer, [TEXTS[0]])
    assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    assert isinstance(missing.value.body, dict) and missing.value.body["type"] == (
        "invalid_request_error"
    )
    assert label in models

    with Client(base) as ours:
        embedded = ours.embed(INPUTS, model=label)
    assert float(np.abs(np.array(embedded.vectors) - reference).max()) < 1e-4
    assert embedded.prompt_tokens == expected_tokens and embedded.dimension == 384
