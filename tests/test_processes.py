"""The shared child-process launcher and `free_port` (smartrouting.processes)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from smartrouting.processes import ChildProcess, ProcessState, free_port
from tests.support import scaled, wait_until

# Ignores SIGTERM, then says so: the parent signals only once the handler is in place. (The
# words are printed apart: the log's start line, which holds the code, must not match.)
IGNORES_SIGTERM = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring', 'SIGTERM', flush=True)\n"
    "time.sleep(600)\n"
)
# Starts a grandchild in its own process group that ignores SIGTERM, prints its pid, waits.
LEAVES_A_GRANDCHILD = (
    "import subprocess, sys, time\n"
    f"g = subprocess.Popen([sys.executable, '-c', {IGNORES_SIGTERM!r}])\n"
    "print('grandchild', g.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def python(
    code: str, log_path: Path, *, name: str | None = None, own_session: bool = True
) -> ChildProcess:
    """`python -c code` under the launcher."""
    argv = [sys.executable, "-c", code]
    return ChildProcess.spawn(argv, log_path, name=name, own_session=own_session)


def wait_for_log(child: ChildProcess, text: str) -> None:
    wait_until(lambda: text in child.read_log(), 30, f"{text!r} in {child.log_path}")


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_free_port_can_be_bound() -> None:
    """The port free_port returns can be bound and listened on right away."""
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        assert sock.getsockname()[1] == port


def test_output_lands_in_the_log_and_tail_returns_it(tmp_path: Path) -> None:
    """stdout and stderr go to the log (folder created); tail gives the last lines; the exit
    code is the child's."""
    code = "import sys\nfor i in range(100): print('line', i)\nprint('oops', file=sys.stderr)\n"
    child = python(code + "sys.exit(3)", tmp_path / "logs" / "child.log", name="printer")
    assert child.wait(scaled(30)) == 3
    assert child.returncode == 3 and not child.alive()
    assert child.state is ProcessState.EXITED
    assert child.tail(3).splitlines() == ["line 98", "line 99", "oops"]
    log = child.read_log()
    assert log.startswith("\n=== start ") and "line 0\n" in log
    assert child.name == "printer"


def test_a_second_start_appends_to_the_log(tmp_path: Path) -> None:
    """A restarted process's output follows the first one's, each after a start line."""
    log_path = tmp_path / "child.log"
    for word in ("first", "second"):
        python(f"print({word!r})", log_path).wait(scaled(30))
    text = log_path.read_text()
    assert text.count("=== start ") == 2 and text.index("first") < text.index("second")


def test_stop_sigterm_is_enough_for_a_cooperative_child(tmp_path: Path) -> None:
    """A child that exits on SIGTERM stops with -SIGTERM; a second stop is a no-op."""
    child = python("import time; time.sleep(600)", tmp_path / "c.log")
    assert child.alive() and child.returncode is None
    assert child.state is ProcessState.RUNNING
    assert child.stop(scaled(30)) == -signal.SIGTERM
    assert child.stop(scaled(30)) == -signal.SIGTERM
    assert child.state is ProcessState.EXITED


def test_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    """SIGTERM is ignored, so stop waits its timeout and then SIGKILLs."""
    child = python(IGNORES_SIGTERM, tmp_path / "stubborn.log")
    wait_for_log(child, "ignoring SIGTERM")
    started = time.monotonic()
    assert child.stop(timeout_s=0.5) == -signal.SIGKILL
    assert time.monotonic() - started >= 0.5
    assert not child.alive()


def test_kill_is_immediate_and_idempotent(tmp_path: Path) -> None:
    """kill() SIGKILLs without a SIGTERM first; after the exit it does nothing."""
    child = python(IGNORES_SIGTERM, tmp_path / "k.log", own_session=False)
    wait_for_log(child, "ignoring SIGTERM")
    child.kill()
    assert child.wait(scaled(30)) == -signal.SIGKILL
    child.kill()
    child.send_signal(signal.SIGTERM)
    assert child.returncode == -signal.SIGKILL


def test_context_manager_stops_the_child(tmp_path: Path) -> None:
    """Leaving the `with` block stops the child."""
    with python("import time; time.sleep(600)", tmp_path / "w.log") as child:
        assert child.alive()
    assert child.returncode == -signal.SIGTERM


def test_stop_sweeps_the_process_group(tmp_path: Path) -> None:
    """A grandchild that ignores SIGTERM does not outlive the child that leads its group."""
    child = python(LEAVES_A_GRANDCHILD, tmp_path / "g.log")
    wait_for_log(child, "ignoring SIGTERM")  # the grandchild shares the log
    found = re.search(r"^grandchild (\d+)$", child.read_log(), re.MULTILINE)
    assert found is not None
    grandchild = int(found.group(1))
    assert running(grandchild)
    assert child.stop(scaled(30)) == -signal.SIGTERM
    wait_until(lambda: not running(grandchild), 10, f"grandchild {grandchild} to die")


async def test_async_wait_and_stop(tmp_path: Path) -> None:
    """wait_async returns the exit code without blocking the loop; stop_async escalates to
    SIGKILL after its timeout like stop."""
    quick = python("import sys; sys.exit(7)", tmp_path / "q.log")
    assert await asyncio.wait_for(quick.wait_async(), scaled(30)) == 7
    stubborn = python(IGNORES_SIGTERM, tmp_path / "s.log")
    await asyncio.to_thread(wait_for_log, stubborn, "ignoring SIGTERM")
    assert await stubborn.stop_async(timeout_s=0.5) == -signal.SIGKILL
    assert stubborn.state is ProcessState.EXITED


async def test_wait_async_can_be_cancelled(tmp_path: Path) -> None:
    """Cancelling wait_async leaves the child running and stoppable."""
    child = python("import time; time.sleep(600)", tmp_path / "c.log")
    waiter = asyncio.create_task(child.wait_async())
    await asyncio.sleep(0)  # let it register its wait before cancelling
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert child.alive()
    assert await child.stop_async(scaled(30)) == -signal.SIGTERM
