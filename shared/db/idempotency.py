"""Table ``idempotency_key``: the same key and body from the same caller give the same run."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg


def lookup(conn: psycopg.Connection[Any], caller: str, key: str) -> tuple[str, uuid.UUID] | None:
    """Return (request hash, run id) of a live key; an expired key is deleted and gives None."""
    conn.execute(
        "DELETE FROM idempotency_key WHERE caller = %s AND key = %s AND expires_at <= now()",
        (caller, key),
    )
    row = conn.execute(
        "SELECT request_hash, run_id FROM idempotency_key WHERE caller = %s AND key = %s",
        (caller, key),
    ).fetchone()
    return (row["request_hash"], row["run_id"]) if row else None


def remember(
    conn: psycopg.Connection[Any],
    caller: str,
    key: str,
    request_hash: str,
    run_id: uuid.UUID,
    ttl_s: int,
) -> bool:
    """Bind the key to the run; return False if a concurrent request bound it first."""
    row = conn.execute(
        "INSERT INTO idempotency_key (caller, key, request_hash, run_id, expires_at) "
        "VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s)) "
        "ON CONFLICT (caller, key) DO NOTHING RETURNING run_id",
        (caller, key, request_hash, run_id, ttl_s),
    ).fetchone()
    return row is not None


def purge_expired(conn: psycopg.Connection[Any]) -> int:
    """Delete expired keys; return how many."""
    return conn.execute("DELETE FROM idempotency_key WHERE expires_at <= now()").rowcount
