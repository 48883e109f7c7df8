"""A careless or hostile caller cannot take the dispatcher down (hardening review, findings 2
and 8): a real `python -m dispatcher` process, raw sockets and HTTP on loopback."""

from __future__ import annotations

import shlex
import socket
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support import ROOT, ChildProcess, free_port, wait_for_http, wait_until

pytestmark = pytest.mark.timeout(120)

#: The dispatcher's file-descriptor limit in the test: small, so silent connections would
#: exhaust it quickly if they were kept.
NOFILE = 256


@pytest.fixture
def dispatcher_url(tmp_path) -> Iterator[str]:
    """`python -m dispatcher` with its descriptor limit at NOFILE and a 1 s idle timeout."""
    port = free_port()
    command = shlex.join(
        [sys.executable, "-m", "dispatcher", "--host", "127.0.0.1", "--port", str(port)]
        + ["--idle-timeout-s", "1", "--log-level", "warning"]
    )
    child = ChildProcess.spawn(
        ["bash", "-c", f"ulimit -n {NOFILE} && exec {command}"],
        tmp_path / "dispatcher.log",
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/health")
        yield url
    finally:
        child.stop()


def test_silent_connections_are_dropped_and_new_callers_served(dispatcher_url: str) -> None:
    """Finding 2: with the descriptor limit at 1,024, 1,009 silent TCP connections held for
    60 s made new callers fail. With the limit at 256, 300 silent connections are closed by
    the server after the idle timeout, and HTTP and workers are served again."""
    host, port = dispatcher_url.removeprefix("http://").split(":")
    silent: list[socket.socket] = []
    try:
        for _ in range(300):
            sock = socket.create_connection((host, int(port)), timeout=5)
            silent.append(sock)

        def all_closed_by_server() -> bool:
            for sock in silent:
                sock.settimeout(0.01)
                try:
                    if sock.recv(1) != b"":
                        return False
                except TimeoutError:
                    return False
                except OSError:
                    continue
            return True

        wait_until(all_closed_by_server, 30, "the server to drop the silent connections")
        answer = httpx.get(dispatcher_url + "/health", timeout=5)
        assert answer.status_code == 200 and answer.json() == {"message": "OK"}
    finally:
        for sock in silent:
            sock.close()


@pytest.mark.parametrize(
    "content",
    [
        b'{"task_type": "t", "label": "a", "timeout_s": 1' + b"0" * 5000 + b"}",
        b'{"task_type": "t", "label": "a", "parameters_json": "{\\"n\\": 1' + b"0" * 5000 + b'}"}',
        b'{"task_type": "t", "label": "a", "parameters": {"n": 1' + b"0" * 5000 + b"}}",
    ],
    ids=["timeout_s", "parameters_json", "parameters"],
)
def test_integers_of_thousands_of_digits_are_a_4xx_and_keep_the_connection(
    dispatcher_url: str, content: bytes
) -> None:
    """Finding 8: integers of more than 4,300 digits gave a text/plain 500 and reset the
    keep-alive connection. They are a JSON 4xx, and the same connection serves the next call."""
    with httpx.Client(base_url=dispatcher_url, timeout=10) as client:
        answer = client.post(
            "/run-task", content=content, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["error"] in ("validation_failed", "invalid_json")
        assert client.get("/health").status_code == 200
