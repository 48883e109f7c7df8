"""Child processes with a log file, and free ports: one launcher for the benchmark, the tests
and the worker's tritonserver supervisor.

`ChildProcess.spawn` starts a command with its stdout and stderr appended to a log file
(after a `=== start` header line, so the log of a restarted process reads in order), by
default in a session of its own. `stop` is the one way down: SIGTERM, wait up to a
deadline, then SIGKILL. A child in its own session is the leader of a process group: its
SIGKILL goes to the whole group, and when the leader is found exited the rest of its group
is SIGKILLed too, so helpers it started (tritonserver's Python-backend stubs) cannot
outlive it.

    RUNNING --terminate--> STOPPING --exit--> EXITED
       |                                        ^
       +-------------------exit-----------------+

Synchronous callers use `stop`/`wait`; asyncio callers use `stop_async`/`wait_async`,
which wait on a pidfd (Linux) instead of blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

#: How much of the end of a log `tail` reads: enough for any error message.
_TAIL_BYTES = 64 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on `host` right now (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ProcessState(enum.Enum):
    """Lifecycle of a child process, as far as its parent knows."""

    RUNNING = "running"
    STOPPING = "stopping"
    EXITED = "exited"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux: SIGKILL the child when its parent dies, even by SIGKILL (no orphans).
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ChildProcess:
    """One child process with its output in `log_path` (None: the parent's own stdout and
    stderr, as in a container whose output is the log); a context manager that stops it."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    #: Whether the child leads a session (and process group) of its own.
    own_session: bool = True
    state: ProcessState = ProcessState.RUNNING

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        log_path: Path | None,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = True,
        die_with_parent: bool = False,
    ) -> Self:
        """Start `argv` with stdout and stderr appended to `log_path` (its folder is created;
        None: they are the parent's).

        `own_session`: a Ctrl-C in the terminal reaches only the parent, which stops its
        children in its own order. `die_with_parent` (Linux only): the kernel SIGKILLs the
        child when the parent dies; the parent must not start it from a short-lived thread.
        """
        with contextlib.ExitStack() as stack:
            log_file = None
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_file = stack.enter_context(log_path.open("ab"))
                log_file.write(f"\n=== start {time.ctime()}: {shlex.join(argv)}\n".encode())
                log_file.flush()
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=None if env is None else dict(env),
                stdout=log_file,
                stderr=None if log_file is None else subprocess.STDOUT,
                start_new_session=own_session,
                preexec_fn=_die_with_parent
                if die_with_parent and sys.platform == "linux"
                else None,
            )
        # The child holds its own descriptor of the log; ours is closed here.
        return cls(name or Path(argv[0]).name, popen, log_path, own_session)

    @property
    def pid(self) -> int:
        """The child's process id (also its process group id when `own_session`)."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, `-N` for signal N, or None while it runs."""
        self.alive()
        return self.popen.returncode

    def alive(self) -> bool:
        """Whether the process still runs (reaps it, and records EXITED, when it does not)."""
        if self.popen.poll() is None:
            return True
        self._exited()
        return False

    def tail(self, lines: int = 40) -> str:
        """The last `lines` lines of the log, for error messages ("" without a log file)."""
        if self.log_path is None:
            return ""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - _TAIL_BYTES))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def read_log(self) -> str:
        """The whole log ("" without a log file)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send_signal(self, signum: int) -> None:
        """Send `signum` to the process (not its group) if it still runs."""
        if self.alive():
            self.popen.send_signal(signum)

    def terminate(self) -> None:
        """Send SIGTERM, once, without waiting: several children can then stop in parallel."""
        if self.state is ProcessState.RUNNING and self.alive():
            self.state = ProcessState.STOPPING
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL now: the whole process group when the child leads one, else the process."""
        # Once the leader is reaped, its group was swept (`_exited`) and its id may be reused.
        if self.popen.returncode is not None:
            return
        if self.own_session:
            self._kill_group()
        else:
            self.popen.kill()

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the exit; `subprocess.TimeoutExpired` after `timeout_s`."""
        code = self.popen.wait(timeout_s)
        self._exited()
        return code

    def wait_or_kill(self, timeout_s: float) -> int:
        """Wait up to `timeout_s` for the exit, then SIGKILL; returns the exit code."""
        try:
            self.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s did not exit within %.1fs; killing it", self.name, timeout_s)
            self.kill()
            self.wait()
        return int(self.popen.returncode)

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL; returns the exit code. Idempotent."""
        self.terminate()
        return self.wait_or_kill(timeout_s)

    async def wait_async(self) -> int:
        """Wait for the exit without blocking the event loop; cancellable."""
        if not self.alive():
            return self.wait()
        try:
            # A pidfd turns readable when the process exits (Linux >= 5.3).
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd: a thread blocks in waitpid instead (it ends with the process).
            return await asyncio.to_thread(self.wait)
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self.wait()

    async def stop_async(self, timeout_s: float = 10.0) -> int:
        """`stop` for asyncio callers: SIGTERM, wait up to `timeout_s`, then SIGKILL."""
        self.terminate()
        try:
            await asyncio.wait_for(self.wait_async(), timeout_s)
        except TimeoutError:
            log.warning("%s did not exit within %.1fs; killing it", self.name, timeout_s)
            self.kill()
            await self.wait_async()
        return int(self.popen.returncode)

    def _exited(self) -> None:
        # Called when the leader has been reaped. A member of its group may still run (one
        # that ignores SIGTERM, or one its leader never stopped): SIGKILL it now, once. The
        # group's id stays taken while a member lives; later, with none left, it may be reused
        # by an unrelated group, so the group is never signalled again.
        if self.state is not ProcessState.EXITED:
            self.state = ProcessState.EXITED
            if self.own_session:
                self._kill_group()

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
