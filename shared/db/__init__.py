"""Database access: the connection pool and the migration runner."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool


def make_pool(database_url: str, max_size: int = 4) -> ConnectionPool:
    """Create a pool that is still closed: open it after the process forks."""
    return ConnectionPool(
        database_url,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"row_factory": dict_row},
        # A dead server should fail a request in seconds, not hang it for the 30 s default.
        timeout=5,
        # A connection the server dropped (restart, pg_terminate_backend) is noticed on checkout
        # and replaced, instead of failing the first query that uses it.
        check=ConnectionPool.check_connection,
        name="sandbox-runner",
    )
