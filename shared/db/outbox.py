"""Table ``outbox``: events waiting to be published."""

from __future__ import annotations

from typing import Any

import psycopg


def claim_batch(
    conn: psycopg.Connection[Any], limit: int = 100, older_than_s: float = 0.0
) -> list[dict[str, Any]]:
    """Lock and return unsent rows, oldest first; concurrent relays skip each other's rows."""
    return conn.execute(
        "SELECT id, event_id, run_id, kind, payload, created_at FROM outbox "
        "WHERE sent_at IS NULL AND created_at < now() - make_interval(secs => %s) "
        "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (older_than_s, limit),
    ).fetchall()


def mark_sent(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    """Record that these events were published."""
    conn.execute("UPDATE outbox SET sent_at = now() WHERE id = ANY(%s)", (ids,))


def delete_published(conn: psycopg.Connection[Any], run_id: object) -> int:
    """Delete a run's published rows (retention); return how many. Unsent ones stay."""
    return conn.execute(
        "DELETE FROM outbox WHERE run_id = %s AND sent_at IS NOT NULL", (run_id,)
    ).rowcount


def events_for_run(conn: psycopg.Connection[Any], run_id: object) -> list[dict[str, Any]]:
    """Return a run's events in the order they were written."""
    return conn.execute(
        "SELECT event_id, kind, payload, created_at, sent_at FROM outbox "
        "WHERE run_id = %s ORDER BY id",
        (run_id,),
    ).fetchall()
