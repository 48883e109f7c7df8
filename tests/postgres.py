"""A real PostgreSQL server for the tests (smartrouting/postgres.py, shared with the
benchmark): `initdb` into a temporary directory, `pg_ctl start` on a free port, `pg_ctl stop`
at the end.

Missing binaries are a failure, not a skip (the `postgres` fixture in tests/conftest.py): the
shared task store (docs/architecture.md, "Shared task store") must be tested wherever the
suite runs, and `./dev test` installs Debian's `postgresql` package.
"""

from __future__ import annotations

from smartrouting.postgres import (
    INSTALL_HINT,
    PostgresServer,
    PostgresUnavailable,
    find_binaries,
    start_postgres,
)

__all__ = [
    "INSTALL_HINT",
    "PostgresServer",
    "PostgresUnavailable",
    "find_binaries",
    "start_postgres",
]
