"""A real dispatcher process and real worker processes that the fault tests kill and restart.

Workers run the SIMULATED engine (`python -m worker --engine simulated`, named as such: these
are fault and scale tests, not model tests) unless a test asks for another engine. The
dispatcher keeps its port across restarts so workers reconnect to the same URL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import ChildProcess, ProcessFactory, free_port, scaled, wait_until

#: Set SMARTROUTING_SOAK=1 for the long versions (run by `task soak`).
SOAK = os.environ.get("SMARTROUTING_SOAK", "").strip().lower() in ("1", "true", "yes")
FINISHED = ("completed", "failed")


@dataclass
class Figures:
    """What a fault run ends with; `lost` must be 0."""

    scenario: str
    submitted: int = 0
    completed: int = 0
    failed_with_error: int = 0
    lost: int = 0
    #: Dispatches after the first (worker lost, or re-queued after a restart): an upper bound
    #: on tasks executed twice.
    redispatched: int = 0
    #: Results that arrived for a task already answered or running elsewhere: executed twice.
    duplicates_executed: int = 0
    faults_injected: int = 0
    recovery_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def report(self) -> str:
        """One JSON line, printed and appended to $SMARTROUTING_FAULTS_FIGURES when set."""
        data = asdict(self)
        data["recovery_s"] = [round(r, 2) for r in self.recovery_s]
        data["recovery_s_max"] = round(max(self.recovery_s), 2) if self.recovery_s else None
        data["wall_s"] = round(self.wall_s, 1)
        line = json.dumps(data)
        print(f"\nFAULT FIGURES {line}")
        target = os.environ.get("SMARTROUTING_FAULTS_FIGURES")
        if target:
            with open(target, "a", encoding="utf-8") as out:
                out.write(line + "\n")
        return line


@dataclass
class SimCluster:
    """One dispatcher and any number of workers, all child processes of the test."""

    processes: ProcessFactory
    tmp: Path
    dispatcher_args: tuple[str, ...] = ()
    port: int = 0
    dispatcher: ChildProcess | None = None
    workers: dict[str, ChildProcess] = field(default_factory=dict)
    restarts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/worker-listen"

    def start_dispatcher(self, *extra: str, env: dict[str, str] | None = None) -> ChildProcess:
        """Start (or restart) the dispatcher on the cluster's port; waits for /health."""
        self.port = self.port or free_port()
        self.restarts += 1
        self.dispatcher = self.processes.dispatcher(
            self.port,
            "--log-level",
            "warning",
            "--ws-ping-interval-s",
            "1",
            "--ws-ping-timeout-s",
            "2",
            *self.dispatcher_args,
            *extra,
            name=f"dispatcher-{self.restarts}",
            env=env,
        )
        return self.dispatcher

    def kill_dispatcher(self) -> None:
        """SIGKILL the dispatcher: no shutdown sequence, no close frames."""
        assert self.dispatcher is not None
        self.dispatcher.kill()
        self.dispatcher.wait(scaled(10))

    def start_worker(
        self,
        worker_id: str,
        *extra: str,
        engine: str = "simulated",
        env: dict[str, str] | None = None,
    ) -> ChildProcess:
        """Start `python -m worker` (simulated engine unless told) connecting to the cluster."""
        child = self.processes.worker(
            self.ws_url,
            worker_id,
            "--engine",
            engine,
            "--state-dir",
            str(self.tmp / "state" / worker_id),
            "--model-repository",
            str(self.tmp / "models"),
            "--shutdown-timeout-s",
            "5",
            "--ping-interval-s",
            "1",
            *extra,
            name=f"{worker_id}-{len(self.processes.children)}",
            env={"HF_HUB_OFFLINE": "1", **(env or {})},
        )
        self.workers[worker_id] = child
        return child

    def kill_worker(self, worker_id: str) -> None:
        """SIGKILL a worker process (its tasks are in flight and never answered)."""
        child = self.workers[worker_id]
        child.kill()
        child.wait(scaled(10))

    def connected(self) -> list[str]:
        try:
            return list(httpx.get(f"{self.url}/workers", timeout=2).json()["workers"])
        except (httpx.HTTPError, ValueError, KeyError):
            return []

    def wait_workers(self, ids: Iterable[str], timeout: float = 60) -> float:
        """Wait until every worker in `ids` is registered; returns the seconds it took."""
        wanted = set(ids)
        start = time.monotonic()
        wait_until(lambda: wanted <= set(self.connected()), timeout, f"workers {sorted(wanted)}")
        return time.monotonic() - start

    def late_results(self) -> int:
        """Results the dispatcher got for tasks already answered or running elsewhere: tasks
        that were executed twice (from /metrics, `smartrouting_late_results_total`)."""
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith("smartrouting_late_results_total "):
                return int(float(line.split()[1]))
        raise AssertionError("no smartrouting_late_results_total in /metrics")

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/stats", timeout=5).json())

    def submit(
        self, client: httpx.Client, count: int, labels: list[str], run_ms: float
    ) -> list[str]:
        """POST /tasks `count` sample tasks over `labels`; every one must be accepted (202)."""
        ids = []
        for i in range(count):
            body = {
                "task_type": "sample_task",
                "label": labels[i % len(labels)],
                "parameters": {"run_ms": run_ms},
            }
            answer = client.post("/tasks", json=body)
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["task_id"])
        return ids

    def statuses(self, client: httpx.Client, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The /tasks/{id} answer of each id (a 404 or a failed request is left out)."""
        found: dict[str, dict[str, Any]] = {}
        for task_id in ids:
            try:
                answer = client.get(f"/tasks/{task_id}")
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                found[task_id] = answer.json()
        return found

    def settle(
        self, client: httpx.Client, ids: list[str], timeout: float, figures: Figures
    ) -> dict[str, dict[str, Any]]:
        """Poll until every task has an answer (or `timeout`); fill `figures` in."""
        answers: dict[str, dict[str, Any]] = {}
        pending = list(ids)
        deadline = time.monotonic() + scaled(timeout)
        while pending and time.monotonic() < deadline:
            for task_id, body in self.statuses(client, pending).items():
                if body["status"] in FINISHED:
                    answers[task_id] = body
            pending = [t for t in pending if t not in answers]
            if pending:
                time.sleep(0.2)  # polling another process: nothing to await
        figures.submitted = len(ids)
        figures.completed = sum(1 for b in answers.values() if b["status"] == "completed")
        figures.failed_with_error = sum(1 for b in answers.values() if b["status"] == "failed")
        figures.lost = len(pending)
        for body in answers.values():
            if body["status"] == "failed":
                code = str(body.get("error", {}).get("error"))
                figures.errors[code] = figures.errors.get(code, 0) + 1
        return answers
