"""Tables ``webhook_delivery`` and ``webhook_attempt``: outbound notifications and their tries.

Functions take a connection and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

WEBHOOK = "webhook"
GITHUB_STATUS = "github_status"
KINDS = (WEBHOOK, GITHUB_STATUS)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of ``webhook_delivery``."""

    id: uuid.UUID
    seq: int
    run_id: uuid.UUID
    event_id: uuid.UUID | None
    kind: str
    event_status: str
    target: dict[str, Any]
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime
    last_status: int | None
    last_error: str | None
    redelivery_of: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None


_COLUMNS = [f.name for f in fields(Delivery)]
_SELECT = sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS)


def add(
    conn: psycopg.Connection[Any],
    *,
    run_id: uuid.UUID,
    event_id: uuid.UUID | None,
    kind: str,
    event_status: str,
    target: dict[str, Any],
    payload: dict[str, Any],
    horizon_s: float,
    redelivery_of: uuid.UUID | None = None,
) -> Delivery | None:
    """Schedule a delivery now; None when this event already has one of this kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown delivery kind {kind}")
    row = conn.execute(
        sql.SQL(
            "INSERT INTO webhook_delivery (id, run_id, event_id, kind, event_status, target, "
            "payload, expires_at, redelivery_of) VALUES (%s, %s, %s, %s, %s, %s, %s, "
            "now() + make_interval(secs => %s), %s) "
            "ON CONFLICT (event_id, kind) WHERE redelivery_of IS NULL DO NOTHING RETURNING {}"
        ).format(_SELECT),
        (
            uuid.uuid4(),
            run_id,
            event_id,
            kind,
            event_status,
            Jsonb(target),
            Jsonb(payload),
            horizon_s,
            redelivery_of,
        ),
    ).fetchone()
    return Delivery(**row) if row else None


def get(conn: psycopg.Connection[Any], delivery_id: uuid.UUID) -> Delivery | None:
    """Return the delivery, or None when no delivery has that id."""
    row = conn.execute(
        sql.SQL("SELECT {} FROM webhook_delivery WHERE id = %s").format(_SELECT), (delivery_id,)
    ).fetchone()
    return Delivery(**row) if row else None


def for_run(conn: psycopg.Connection[Any], run_id: uuid.UUID) -> list[Delivery]:
    """Return a run's deliveries in the order they were scheduled."""
    rows = conn.execute(
        sql.SQL("SELECT {} FROM webhook_delivery WHERE run_id = %s ORDER BY seq").format(_SELECT),
        (run_id,),
    ).fetchall()
    return [Delivery(**r) for r in rows]


def attempts_for(
    conn: psycopg.Connection[Any], delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Return the recorded attempts of each delivery, oldest first."""
    rows = conn.execute(
        "SELECT delivery_id, attempt, started_at, duration_ms, status_code, error "
        "FROM webhook_attempt WHERE delivery_id = ANY(%s) ORDER BY delivery_id, attempt",
        (delivery_ids,),
    ).fetchall()
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["delivery_id"], []).append(row)
    return out


def claim_due(conn: psycopg.Connection[Any], limit: int, lease_s: float) -> list[Delivery]:
    """Take due deliveries: count the attempt and hide them for ``lease_s`` while they are sent.

    Only the oldest unsettled delivery of a run and kind is due, so they arrive in order.
    Concurrent senders skip each other's rows; a sender that dies leaves its rows to be
    retried when the lease runs out.
    """
    rows = conn.execute(
        sql.SQL(
            "UPDATE webhook_delivery SET attempts = attempts + 1, updated_at = now(), "
            "next_attempt_at = now() + make_interval(secs => %(lease)s) "
            "WHERE id IN (SELECT c.id FROM webhook_delivery c "
            "  WHERE c.state = 'pending' AND c.next_attempt_at <= now() AND NOT EXISTS ("
            "    SELECT 1 FROM webhook_delivery e WHERE e.run_id = c.run_id AND e.kind = c.kind "
            "    AND e.state = 'pending' AND e.seq < c.seq) "
            "  ORDER BY c.next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
            "RETURNING {}"
        ).format(_SELECT),
        {"lease": lease_s, "limit": limit},
    ).fetchall()
    return sorted((Delivery(**r) for r in rows), key=lambda d: d.seq)


def record_attempt(
    conn: psycopg.Connection[Any],
    delivery: Delivery,
    *,
    started_at: datetime,
    duration_ms: int,
    status_code: int | None,
    error: str | None,
    state: str,
    retry_in_s: float | None,
) -> bool:
    """Keep one attempt and settle the delivery (``state``) or schedule its next try.

    Returns False when the delivery moved on meanwhile (a stale sender): nothing is changed.
    """
    moved = conn.execute(
        "UPDATE webhook_delivery SET state = %(state)s, last_status = %(status)s, "
        "last_error = %(error)s, updated_at = now(), "
        "delivered_at = CASE WHEN %(state)s = 'succeeded' THEN now() END, "
        "next_attempt_at = CASE WHEN %(retry)s::float8 IS NULL THEN next_attempt_at "
        "  ELSE now() + make_interval(secs => %(retry)s::float8) END "
        "WHERE id = %(id)s AND attempts = %(attempt)s AND state = 'pending'",
        {
            "state": state,
            "status": status_code,
            "error": error,
            "retry": retry_in_s,
            "id": delivery.id,
            "attempt": delivery.attempts,
        },
    ).rowcount
    if not moved:
        return False
    conn.execute(
        "INSERT INTO webhook_attempt (delivery_id, attempt, started_at, duration_ms, "
        "status_code, error) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (delivery.id, delivery.attempts, started_at, duration_ms, status_code, error),
    )
    return True


def seconds_left(conn: psycopg.Connection[Any], delivery_id: uuid.UUID) -> float:
    """Return how long until the delivery's retry horizon (database clock; negative: past)."""
    row = conn.execute(
        "SELECT extract(epoch FROM expires_at - now())::float8 AS left_s "
        "FROM webhook_delivery WHERE id = %s",
        (delivery_id,),
    ).fetchone()
    return float(row["left_s"]) if row else -1.0
