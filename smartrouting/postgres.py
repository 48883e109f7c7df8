"""A throwaway PostgreSQL server: `initdb` into a temporary directory, `pg_ctl start` on a free
port with its unix socket in that directory, `pg_ctl stop` (and the directory removed) at the
end. The shared task store of several dispatchers (docs/architecture.md §3.5.1) needs a real
server; the tests and `python -m benchmark run --dispatchers N` start one this way.

The binaries come from PATH or Debian's /usr/lib/postgresql/<version>/bin. PostgreSQL refuses
to run as root, so as root the server runs as the `postgres` user (`runuser`), with the
directory given to it. Durability is off (`fsync`, `synchronous_commit`, `full_page_writes`):
the data lives as long as one test session or one benchmark run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from smartrouting.processes import free_port

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: several dispatchers need"
    " a real server for their shared task store. Install Debian's package (sudo apt-get"
    " install postgresql, which `./dev test` does) or put initdb/pg_ctl on PATH."
)


class PostgresUnavailable(RuntimeError):
    """The server binaries are missing, or the server did not start."""


def find_binaries() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`, or None."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    for found in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(found).parent
    return None


@dataclass
class PostgresServer:
    """One running server; `url(dbname)` connects over TCP on 127.0.0.1."""

    bin_dir: Path
    root: Path
    port: int
    user: str
    as_user: list[str]

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A fresh database `name` (dropped first when it exists); returns its URL. Needs
        psycopg (the `postgres` extra)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _pg(self, tool: str, *args: str, timeout: float = 60.0) -> None:
        command = [*self.as_user, str(self.bin_dir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}"
            )

    def start(self, max_connections: int = 200) -> PostgresServer:
        self._pg("initdb", "-D", str(self.data_dir), "-U", self.user, "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            f" -c max_connections={max_connections}"
        )
        log = str(self.log_path)
        self._pg("pg_ctl", "-D", str(self.data_dir), "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        """Stop the server at once (`-m immediate`) and remove its directory."""
        try:
            self._pg("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(user: str = "smartrouting") -> PostgresServer:
    """Start a throwaway server; `PostgresUnavailable` (with `INSTALL_HINT` when PostgreSQL is
    not installed) if it cannot."""
    bin_dir = find_binaries()
    if bin_dir is None:
        raise PostgresUnavailable(INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="smartrouting-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        shutil.chown(root, "postgres", "postgres")
        root.chmod(0o700)
        as_user = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(bin_dir, root, free_port(), user, as_user)
    try:
        return server.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
