"""`python -m benchmark demo`: the project's main command, end to end on real parts.

Starts the uploader, the dispatcher and two workers with the real Triton engine,
uploads sentence-transformers/all-MiniLM-L6-v2 through the dispatcher's
`POST /upload-model`, runs a real `embed_texts` task with `POST /run-task`, checks
the answer (384-dimensional unit vectors), prints the request, the answer and
curl examples, then exits 0, or stays up with `--keep-running` until Ctrl-C. Any
failing step raises DemoError with the log tail of every process.

SIGINT and SIGTERM to the demo's process stop it at any point: the cluster is stopped (each
process SIGTERM, then SIGKILL after its deadline) and the demo says so. Its run directory (logs,
the model repository) is a new temporary one unless `--run-dir` names one; a temporary one is
removed at the end unless `--keep-run-dir` is given or the demo failed (its logs then explain
why), and the demo prints which happened.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmark.cluster import ClusterConfig, LocalCluster
from benchmark.errors import ClusterError, DemoError

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384
TEXTS = [
    "Smart routing sends each task to a worker that already holds its model.",
    "Loading a model costs far more than running it.",
]


@dataclass
class DemoConfig:
    """Options of the demo."""

    workers: int = 2
    keep_running: bool = False
    keep_run_dir: bool = False
    engine: str = "triton"
    run_dir: Path | None = None
    ready_timeout_s: float = 180.0
    worker_args: list[str] = field(default_factory=list)
    dispatcher_port: int = 0
    dispatchers: int = 1


def step(message: str) -> None:
    """Print one progress line of the demo."""
    print(f"==> {message}", flush=True)


def check_embeddings(answer: dict[str, Any], n_texts: int) -> list[float]:
    """Check a /run-task answer holds `n_texts` unit vectors of 384 floats; their norms."""
    result = answer.get("result")
    if answer.get("status") != "completed" or not isinstance(result, dict):
        raise DemoError(f"the task did not complete: {json.dumps(answer)[:500]}")
    vectors = result.get("embeddings")
    if not isinstance(vectors, list) or len(vectors) != n_texts:
        raise DemoError(f"expected {n_texts} embeddings, got {str(vectors)[:200]}")
    norms = []
    for vector in vectors:
        if not isinstance(vector, list) or len(vector) != DIMENSION:
            size = len(vector) if isinstance(vector, list) else "no list"
            raise DemoError(f"expected {DIMENSION} floats per embedding, got {size}")
        norm = math.sqrt(sum(float(x) * float(x) for x in vector))
        if abs(norm - 1.0) > 1e-3:
            raise DemoError(f"embedding is not unit length: norm {norm:.6f}")
        norms.append(norm)
    return norms


def _short(answer: dict[str, Any]) -> str:
    shown = json.loads(json.dumps(answer))
    vectors = shown.get("result", {}).get("embeddings", [])
    shown["result"]["embeddings"] = [
        [round(x, 5) for x in v[:4]] + [f"... {len(v) - 4} more"] for v in vectors
    ]
    return json.dumps(shown, indent=2)


def _post(client: httpx.Client, path: str, body: dict[str, Any], timeout: float) -> Any:
    try:
        response = client.post(path, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise DemoError(f"POST {path} failed: {exc!r}") from exc
    if response.status_code != 200:
        raise DemoError(f"POST {path} answered {response.status_code}: {response.text[:1000]}")
    return response.json()


def _curl_examples(base: str, label: str) -> str:
    body = json.dumps(
        {
            "task_type": "embed_texts",
            "label": label,
            "parameters_json": json.dumps({"texts": ["hello"]}),
        }
    )
    return "\n".join(
        [
            f"  curl {base}/health",
            f"  curl {base}/workers",
            f"  curl {base}/labels",
            f"  curl {base}/stats",
            f"  curl -X POST {base}/run-task -H 'Content-Type: application/json' \\",
            f"       -d '{body}'",
        ]
    )


def _through_another_dispatcher(base: str, label: str, body: dict[str, Any]) -> Any:
    """The second call through another dispatcher (active-active): it learns the upload at
    its next catalogue sync with the uploader (seconds), then routes to the worker that
    already holds the model, which the first dispatcher placed."""
    with httpx.Client(base_url=base) as other:
        deadline = time.monotonic() + 30.0
        while other.get(f"/models/{label}").status_code != 200:
            if time.monotonic() > deadline:
                raise DemoError(f"dispatcher {base} did not learn the model {label!r} in 30 s")
            time.sleep(0.2)
        step(f"dispatcher {base} knows {label!r} too (catalogue sync); second call through it")
        return _post(other, "/run-task", body, 120.0)


def _demo_steps(cluster: LocalCluster, cfg: DemoConfig) -> None:
    base = cluster.base_url
    with httpx.Client(base_url=base) as client:
        health = client.get("/health").json()
        workers = client.get("/workers").json()
        step(f"dispatcher {base} healthy {health}; workers {workers['workers']}")
        upload = {"model_id": MODEL_ID, "max_batch_size": 32, "overwrite": False}
        step(f"POST /upload-model {json.dumps(upload)} (converts to ONNX and validates; ~1 min)")
        started = time.monotonic()
        uploaded = _post(client, "/upload-model", upload, timeout=600.0)
        if uploaded.get("status") != "success" or not uploaded.get("model_name"):
            raise DemoError(f"upload did not succeed: {uploaded}")
        label = str(uploaded["model_name"])
        step(f"uploaded as label {label!r} in {time.monotonic() - started:.1f}s: {uploaded}")
        body = {
            "task_id": f"demo-{int(time.time())}",
            "task_type": "embed_texts",
            "label": label,
            "parameters_json": json.dumps({"texts": TEXTS}),
        }
        step("POST /run-task\n" + json.dumps(body, indent=2))
        started = time.monotonic()
        answer = _post(client, "/run-task", body, timeout=300.0)
        elapsed = time.monotonic() - started
        norms = check_embeddings(answer, len(TEXTS))
        step(f"answer in {elapsed:.2f}s (first call loads the model):\n{_short(answer)}")
        step(f"checked: {len(norms)} embeddings of {DIMENSION} floats, norms {norms}")
        second = {**body, "task_id": body["task_id"] + "-2"}
        if len(cluster.base_urls) > 1:
            again = _through_another_dispatcher(cluster.base_urls[1], label, second)
        else:
            again = _post(client, "/run-task", second, 120.0)
        check_embeddings(again, len(TEXTS))
        step(
            f"second call: worker {again.get('worker_id')}, label miss {again.get('label_miss')}, "
            f"timings {again.get('timings_ms')}"
        )
        step(f"labels now: {client.get('/labels').json()}")
    print("\nTry it yourself while the cluster runs (--keep-running):")
    print(_curl_examples(base, label))


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop the demo (the cluster is stopped on the way out)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGINT/SIGTERM raise `Interrupted` once (whatever the demo is doing), and set the event;
    a second one while the cluster stops is only acknowledged, so the stop completes."""
    stopping = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stopping.is_set():
            print(f"==> {signal.Signals(signum).name}: already stopping", flush=True)
            return
        stopping.set()
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopping
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(cfg: DemoConfig) -> int:
    """Run the demo; 0 on success (and when stopped after it passed with --keep-running),
    128 + the signal when stopped before it passed, DemoError (with log tails) on a failure."""
    temporary = cfg.run_dir is None
    run_dir = cfg.run_dir or Path(tempfile.mkdtemp(prefix="smartrouting-demo-"))
    failed = True
    try:
        with stop_on_signals():
            code = _run_demo(cfg, run_dir)
        failed = False
        return code
    except Interrupted as stop:
        failed = False
        step(f"stopped by {stop} before the demo passed")
        return 128 + stop.signum
    finally:
        if temporary and not failed and not cfg.keep_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
            step(f"removed the run directory {run_dir} (--keep-run-dir keeps it)")
        else:
            step(f"run directory kept: {run_dir}")


def _run_demo(cfg: DemoConfig, run_dir: Path) -> int:
    repo = run_dir / "models"
    repo.mkdir(parents=True, exist_ok=True)
    step(f"run directory {run_dir} (logs, model repository)")
    dispatchers = "dispatcher" if cfg.dispatchers == 1 else f"{cfg.dispatchers} dispatchers"
    step(f"starting uploader, {dispatchers} and {cfg.workers} {cfg.engine} workers")
    cluster_cfg = ClusterConfig(
        run_dir=run_dir / "logs",
        workers=cfg.workers,
        capacity=2,
        engine=cfg.engine,  # type: ignore[arg-type]
        policy="routed",
        model_repository=repo,
        with_uploader=True,
        log_level="info",
        ready_timeout_s=cfg.ready_timeout_s,
        stop_timeout_s=30.0,
        worker_args=list(cfg.worker_args),
        dispatcher_port=cfg.dispatcher_port,
        dispatchers=cfg.dispatchers,
    )
    cluster = LocalCluster(cluster_cfg)
    try:
        with cluster:
            passed = False
            try:
                urls = (
                    f"{dispatchers} {', '.join(cluster.base_urls)}, uploader {cluster.uploader_url}"
                )
                step(f"cluster ready: {urls}")
                try:
                    _demo_steps(cluster, cfg)
                except DemoError as exc:
                    raise DemoError(f"{exc}\n\nlog tails:\n{cluster.log_tails()}") from exc
                passed = True
                step("demo passed")
                if cfg.keep_running:
                    page = f"{cluster.base_url}/dashboard"
                    step(f"running (status page {page}); press Ctrl-C to stop")
                    while True:
                        cluster.check_alive()
                        time.sleep(1.0)
            except Interrupted as stop:
                if not passed:
                    raise
                # Ctrl-C (or SIGTERM) is how --keep-running is meant to end.
                step(f"{stop}: stopping the cluster")
            else:
                step("stopping the cluster")
    except ClusterError as exc:
        raise DemoError(f"the cluster failed: {exc}") from exc
    step("cluster stopped")
    return 0
