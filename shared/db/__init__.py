"""Database access: the connection pool and the migration runner."""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
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
        check=check_connection,
        name="sandbox-runner",
    )


def check_connection(conn: psycopg.Connection[Any]) -> None:
    """Raise if the server dropped ``conn`` (restart, pg_terminate_backend); else return.

    Checked on every checkout, so a dropped connection is replaced instead of failing the first
    query that uses it. A server that ends a session writes its error and closes the socket, so
    an idle connection with nothing to read is alive: only a readable one costs the round trip
    of the pool's own check, which would otherwise be paid on every checkout.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


@contextmanager
def transaction(
    pool: ConnectionPool, *, flush_wal: bool = True
) -> Iterator[psycopg.Connection[Any]]:
    """One transaction on a pooled connection, pipelined, committed when the block ends.

    Statements whose results are not read wait for nothing: they go out with the next read or
    with the commit. A state change with its event and its dispatch then waits for two round
    trips to Postgres instead of five; on a busy machine each one costs a wake-up of the
    server process, and they were most of a hop's latency.

    ``flush_wal=False`` commits without waiting for the WAL flush, for a write whose loss in a
    database crash only repeats work (any later synchronous commit flushes it too).
    """
    with pool.connection() as conn, conn.pipeline():
        if not flush_wal:
            conn.execute("SET LOCAL synchronous_commit TO off")
        yield conn
        conn.commit()
